"""A folder of images predicted by the folds of a run: the predictions, the class maps of every
predicted class, and report.html driven in a real headless Chromium (sorting, filtering, detail
view, no console errors). The screenshot is kept in test-artifacts/."""

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
    result = predict_folder(ens, images, out, report=[11], opts=PredictOptions(device="cpu"), echo=lambda _: None)
    return root, images, result


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
    assets = layout.report_assets(r.predictions)
    for _, row in df.iterrows():
        probs = row.iloc[1:29].to_numpy(float)
        classes = set(np.flatnonzero(probs >= 0.5)) | {3, 11}
        maps = {int(p.stem[4:]) for p in (assets / row["Id"]).glob("cam_*.png")}
        assert maps == classes, row["Id"]
        assert {"composite.png", "thumb.png", "red.png", "green.png", "blue.png", "yellow.png"} <= {
            p.name for p in (assets / row["Id"]).iterdir()}


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
            # the detail view: composite, 4 stains, a map per predicted class, all images decoded
            rows.first.click()
            detail = page.locator("#detail")
            assert detail.is_visible()
            first = rows.first.get_attribute("data-id")
            n_maps = len(list((layout.report_assets(r.predictions) / first).glob("cam_*.png")))
            assert detail.locator("img").count() == 1 + 4 + n_maps
            page.wait_for_function("[...document.querySelectorAll('#detail img')].every(i => i.complete)")
            widths = page.eval_on_selector_all("#detail img", "els => els.map(e => e.naturalWidth)")
            assert all(w > 0 for w in widths)
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
    text = r.report.read_text()
    data = json.loads(text.split('id="data">', 1)[1].split("</script>", 1)[0])
    df = pd.read_csv(r.predictions, keep_default_na=False).set_index("Id")
    assert [row["id"] for row in data["rows"]] == df.index.tolist()
    for row in data["rows"]:
        assert row["probs"] == pytest.approx(df.loc[row["id"]].iloc[:28].astype(float).tolist(), abs=1e-6)
    assert data["thresholds"][3] == 0.0 and data["skipped"][0]["id"] == "broken"
