"""A folder of images predicted by the folds of a run: the predictions, the class maps of every
predicted class, the known classes beside them, a report of one picture per field, and
report.html driven in a real headless Chromium (sorting, filtering, detail view, no console
errors). The screenshot is kept in test-artifacts/."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hpa.config import TrainConfig
from hpa.core.checkpoint import load_checkpoint
from hpa.data import layout
from hpa.data.labels import CLASS_NAMES
from hpa.models import build_model
from hpa.prediction.ensemble import from_runs
from hpa.prediction.folder import predict_folder
from hpa.prediction.inference import DIHEDRAL, PredictOptions

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
@pytest.fixture(scope="module")
def predicted(small_data, tiny_runs, tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    images = root / "images"
    shutil.copytree(small_data / "test", images)
    first = sorted(images.glob("*_red.png"))[0].name[:-len("_red.png")]
    for c in ("red", "green", "blue", "yellow"):  # a sample whose green file is empty
        shutil.copy(images / f"{first}_{c}.png", images / f"broken_{c}.png")
    (images / "broken_green.png").write_bytes(b"")
    thr = np.full(28, 0.5)
    thr[3] = 0.0  # every image predicts class 3: a filter that keeps all, and maps for it everywhere
    ens = from_runs(tiny_runs, "tiny_cnn", 32, [0, 1], torch.device("cpu"), PredictOptions(DIHEDRAL[:2], amp="off"),
                    thresholds=thr)
    out = root / "out" / "preds.csv"
    result = predict_folder(ens, images, out, report=[11], opts=PredictOptions(device="cpu", labels=small_data /
                                                                               "test_labels.csv"), echo=lambda _: None)
    return root, images, result


def page_json(report: Path) -> dict:
    return json.loads(report.read_text().split('id="data">', 1)[1].split("</script>", 1)[0])


def test_predictions_are_the_folds_mean_over_tta_and_every_predicted_class_has_a_map(predicted, tiny_runs):
    root, images, r = predicted
    df = pd.read_csv(r.predictions, keep_default_na=False)
    assert list(df.columns) == ["Id", *map(str, range(28)), "predicted"]
    assert "broken" not in set(df["Id"]) and "broken" in r.skipped and "empty file" in r.skipped["broken"]
    models = []
    for f in (0, 1):  # an independent forward pass: each fold's best.pt, the image and its flip, by hand
        ck = load_checkpoint(layout.run_dir(tiny_runs, "tiny_cnn", 32, f) / "best.pt")
        m = build_model("tiny_cnn", **TrainConfig(**ck["config"]).model)
        m.load_state_dict(ck["model"])
        models.append(m.eval())
    from hpa.data.images import read_sample

    ids = df["Id"].tolist()[:5]
    x = torch.stack([torch.from_numpy(read_sample(images, i)).permute(2, 0, 1).float() / 255 for i in ids])
    with torch.no_grad():
        want = sum(torch.sigmoid(m(v)) for m in models for v in (x, x.flip(3))).numpy() / 4
    np.testing.assert_allclose(df.iloc[:5, 1:29].to_numpy(float), want, atol=1e-5)
    data = {row["id"]: row for row in page_json(r.report)["rows"]}
    for _, row in df.iterrows():
        probs = row.iloc[1:29].to_numpy(float)
        classes = set(np.flatnonzero(probs >= 0.5)) | {3, 11}
        assert {m["k"] for m in data[row["Id"]]["maps"]} == classes, row["Id"]


def test_the_report_is_one_picture_per_field_at_its_own_side(predicted):
    """report_files/ holds one JPEG per field (the composite and the four stains at the field's 32
    px, not the model's), and the page and pictures together stay small."""
    import cv2

    from hpa.data.images import read_sample
    from hpa.prediction.explain import composite

    _, images, r = predicted
    df = pd.read_csv(r.predictions, keep_default_na=False)
    files = sorted(p for p in layout.report_assets(r.predictions).rglob("*") if p.is_file())
    assert [p.name for p in files] == sorted(f"{i}.jpg" for i in df["Id"])
    for p in files[:5]:
        pic = cv2.imread(str(p))[..., ::-1].astype(int)
        img = read_sample(images, p.stem)
        assert pic.shape == (32, 5 * 32, 3)
        # the same pictures up to JPEG's loss (about 9 and 5 grey levels on these fields, which are
        # noise at the pixel scale; a tile in the wrong place is off by 40 or more)
        assert np.abs(pic[:, :32] - composite(img)).mean() < 14
        for t, c in enumerate((1, 0, 2, 3), 1):  # then green, red, blue, yellow in grey
            assert np.abs(pic[:, 32 * t:32 * (t + 1)].mean(-1) - img[..., c]).mean() < 8
    total = r.report.stat().st_size + sum(p.stat().st_size for p in files)
    assert total < 25_000 * len(df), total  # 28 fields: the old PNG folders took 5 times that


def test_the_maps_drawn_are_grad_cam_of_the_folds_and_views(predicted, tiny_runs):
    """Each map in the page (a grey PNG, 255 at its maximum) is Grad-CAM as captum computes it on
    each fold's model, the image and its flip (turned back), averaged and scaled to its maximum."""
    import base64

    import cv2
    from captum.attr import LayerAttribution, LayerGradCam

    from hpa.data.images import read_sample

    _, images, r = predicted
    models = []
    for f in (0, 1):
        ck = load_checkpoint(layout.run_dir(tiny_runs, "tiny_cnn", 32, f) / "best.pt")
        m = build_model("tiny_cnn", **TrainConfig(**ck["config"]).model)
        m.load_state_dict(ck["model"])
        models.append(m.eval())
    for row in page_json(r.report)["rows"][:4]:
        x = torch.from_numpy(read_sample(images, row["id"])).permute(2, 0, 1).float()[None] / 255
        for m in row["maps"]:
            total = torch.zeros(32, 32)
            for model in models:
                for flip in (False, True):
                    v = x.flip(3) if flip else x
                    a = LayerGradCam(model, model.cam_layer()).attribute(v, target=m["k"], relu_attributions=True)
                    a = LayerAttribution.interpolate(a.detach(), (32, 32), "bilinear").clamp_min(0)[0, 0]
                    total += a.flip(1) if flip else a
            if m.get("empty"):
                assert total.max() == 0
                continue
            want = np.round(total.numpy() / total.max().item() * 255)
            got = cv2.imdecode(np.frombuffer(base64.b64decode(m["png"]), np.uint8), cv2.IMREAD_UNCHANGED)
            assert got.shape == (m["side"], m["side"]) == (32, 32)
            assert np.abs(got - want).max() <= 1, (row["id"], m["k"])


def test_the_known_classes_shown_are_the_labels_csv(predicted, small_data):
    _, _, r = predicted
    labels = pd.read_csv(small_data / "test_labels.csv", dtype=str).set_index("Id")["Target"]
    data = page_json(r.report)
    assert data["labelled"] is True
    for row in data["rows"]:
        assert row["truth"] == sorted(int(k) for k in labels[row["id"]].split())


def test_a_map_without_evidence_says_so():
    """An all-zero map (Grad-CAM negative everywhere) is sent as `empty`, never as a blank picture."""

    from hpa.prediction.folder import image_row
    from hpa.prediction.html_report import PAGE

    row = image_row("x", np.array([0.9, 0.8]), np.array([True, True]), {0: np.zeros((8, 8)), 1: np.eye(8)}, 8,
                    "report_files/x.jpg", None)
    assert row["maps"][0] == {"k": 0, "empty": True}
    assert row["maps"][1]["k"] == 1 and "png" in row["maps"][1] and "truth" not in row
    assert "no evidence located" in PAGE


def test_report_images_of_an_earlier_version_are_replaced_and_other_files_refused(tmp_path):
    from hpa.errors import HPAError
    from hpa.prediction.folder import check_report_assets

    old = tmp_path / "report_files"
    for name in ("composite.png", "thumb.png", "green.png", "cam_3.png"):
        (old / "A1").mkdir(parents=True, exist_ok=True)
        (old / "A1" / name).write_bytes(b"png")
    (old / "B2.jpg").write_bytes(b"jpg")
    check_report_assets(old)  # all the toolkit's: the folder may be replaced
    (old / "A1" / "notes.png").write_text("mine")
    with pytest.raises(HPAError, match="holds files that are not report images"):
        check_report_assets(old)


def launch(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"])


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium; .ci/run does)")
def test_report_in_a_real_browser_sorts_filters_and_opens_the_detail_view(predicted):
    playwright = pytest.importorskip("playwright.sync_api")
    _, _, r = predicted
    df = pd.read_csv(r.predictions, keep_default_na=False)
    n = len(df)
    with playwright.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors, requests = [], []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda q: requests.append(q.url))
            page.goto(r.report.as_uri())
            page.wait_for_load_state("load")
            rows = page.locator("#rows tr")
            assert rows.count() == n
            # sorting by a class probability: the rows in the CSV's descending order of that column
            p3 = df.set_index("Id")["3"].round(6)  # the page's precision
            page.select_option("#sort", "3")
            shown = [rows.nth(i).get_attribute("data-id") for i in range(rows.count())]
            assert len(shown) == n and p3.loc[shown].is_monotonic_decreasing and shown != sorted(shown)
            page.select_option("#order", "asc")
            shown = [rows.nth(i).get_attribute("data-id") for i in range(rows.count())]
            assert p3.loc[shown].is_monotonic_increasing
            # filtering by a predicted class: exactly the rows whose probability reaches its threshold
            k = int(df.iloc[:, 1:29].ge(0.5).sum().drop("3").idxmax())
            want = set(df.loc[df[str(k)] >= 0.5, "Id"])
            page.select_option("#filter", str(k))
            shown = {rows.nth(i).get_attribute("data-id") for i in range(rows.count())}
            assert shown == want and 0 < len(shown) <= n
            page.select_option("#filter", "-1")
            assert rows.count() == n
            # the known classes: a column of the table, and a filter keeping the images with an error
            truth = {row["id"]: row["truth"] for row in page_json(r.report)["rows"]}
            wrong = {i for i, p in zip(df["Id"], df["predicted"]) if set(p.split("; ")) - {""} !=
                     {CLASS_NAMES[k] for k in truth[i]}}
            page.check("#errors")
            assert {rows.nth(i).get_attribute("data-id") for i in range(rows.count())} == wrong
            page.uncheck("#errors")
            first = rows.first.get_attribute("data-id")
            known = rows.first.locator("td").nth(3).inner_text()
            assert all(CLASS_NAMES[k] in known for k in truth[first])
            # the detail view: the field, a map per predicted class over the protein or "no evidence located",
            # the four stains, the pictures decoded
            rows.first.click()
            detail = page.locator("#detail")
            assert detail.is_visible()
            maps = next(row["maps"] for row in page_json(r.report)["rows"] if row["id"] == first)
            assert detail.locator("canvas.map").count() == sum(not m.get("empty") for m in maps)
            assert detail.locator(".empty").count() == sum(bool(m.get("empty")) for m in maps)
            assert detail.locator("#field").count() == 1 and detail.locator(".stain").count() == 4
            page.wait_for_function("[...document.querySelectorAll('#rows img')].slice(0, 3).every(i => i.complete)")
            widths = page.eval_on_selector_all("#rows img", "els => els.slice(0, 3).map(e => e.naturalWidth)")
            assert widths == [5 * 32] * 3
            assert "broken" in page.locator("#skipped").inner_text()
            assert "empty file" in page.locator("#skipped").inner_text()
            out = Path(os.environ.get("HPA_TEST_ARTIFACTS", ROOT / "test-artifacts"))
            out.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out / "report.png"))
            assert errors == []
            assert all(u.startswith(("file:", "data:", "about:")) for u in requests)  # no network, no server
        finally:
            browser.close()


def test_report_page_data_is_the_predictions(predicted):
    _, _, r = predicted
    data = page_json(r.report)
    df = pd.read_csv(r.predictions, keep_default_na=False).set_index("Id")
    assert [row["id"] for row in data["rows"]] == df.index.tolist()
    for row in data["rows"]:
        assert row["probs"] == pytest.approx(df.loc[row["id"]].iloc[:28].astype(float).tolist(), abs=1e-6)
    assert data["thresholds"][3] == 0.0 and data["skipped"][0]["id"] == "broken"


def test_labels_need_a_report_and_the_kaggle_classes(tmp_path, small_data):
    from types import SimpleNamespace

    from hpa.errors import HPAError
    from hpa.prediction.folder import read_truth

    ens = SimpleNamespace(classes=["a"] * 28)
    labels = small_data / "test_labels.csv"
    with pytest.raises(HPAError, match="--labels .*test_labels.csv: the known classes are shown in the report"):
        predict_folder(ens, small_data / "test", tmp_path / "p.csv", report=False, opts=PredictOptions(labels=labels))
    assert not (tmp_path / "p.csv").exists()
    with pytest.raises(HPAError, match="--labels .*: Target holds Kaggle 2018 class numbers and the model predicts 31"):
        read_truth(labels, 31)
