"""The cells in report.html (hpa.prediction.cell_report): after predict_cells, the page beside the
predictions holds every cell of cells.csv with its outline on the field as shown, and in a real
headless Chromium a click on a cell shows it; the cells table sorts and filters. The screenshot is
kept in test-artifacts/."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from hpa.data import layout
from hpa.errors import HPAError

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
N_FIELDS, SIDE = 3, 128


def page_json(report: Path) -> dict:
    text = report.read_text()
    return json.loads(text.split('id="data">', 1)[1].split("</script>", 1)[0])


@pytest.fixture(scope="module")
def with_cells(tmp_path_factory):
    """Three drawn fields of 128 px predicted by an untrained tiny_cnn at 64 px, with a report and
    known labels, then their cells by class maps."""
    from hpa.config import load_arch_config
    from hpa.data.demo import render_cells
    from hpa.data.images import write_sample_png
    from hpa.models import build_model
    from hpa.prediction.cells import predict_cells
    from hpa.prediction.ensemble import Ensemble, Member
    from hpa.prediction.folder import predict_folder
    from hpa.prediction.inference import PredictOptions

    root = tmp_path_factory.mktemp("cell_report")
    for k in range(N_FIELDS):
        img, _, _ = render_cells([0, 25], SIDE, np.random.default_rng(20 + k))
        write_sample_png(root / "imgs", f"f{k}", img)
    pd.DataFrame({"Id": ["f0", "f1"], "Target": ["0 25", "3"]}).to_csv(root / "labels.csv", index=False)
    cfg = load_arch_config("tiny_cnn", size=64, fold=0, pretrained="none")
    thr = np.full(28, 0.5)
    thr[3] = 0.0  # every field predicts class 3, so every field has a map
    ens = Ensemble([Member("tiny_cnn_64", 64, [build_model("tiny_cnn", **cfg.model).eval()], ("id",), [64], "off",
                           [0], [cfg], [{}])], "equal", np.ones(1), thr)
    out = root / "out" / "preds.csv"
    predict_folder(ens, root / "imgs", out, opts=PredictOptions(device="cpu", labels=root / "labels.csv"),
                   echo=lambda _: None)
    before = page_json(layout.folder_report(out))
    predict_cells(ens, root / "imgs", out, opts=PredictOptions(device="cpu"), echo=lambda _: None)
    return root, out, ens, before


def test_the_page_holds_cells_csv_and_the_image_data_it_had(with_cells):
    _, out, _, before = with_cells
    data = page_json(layout.folder_report(out))
    table = pd.read_csv(layout.cell_outputs(out)["table"], dtype={"Id": str})
    assert data["cells"] is True and len(table) > N_FIELDS
    for row, old in zip(data["rows"], before["rows"]):
        assert {k: v for k, v in row.items() if k != "cells"} == old  # the images as the first stage wrote them
        mine = table[table.Id == row["id"]]
        assert [c["cell"] for c in row["cells"]] == mine["cell"].tolist()
        assert [c["area"] for c in row["cells"]] == mine["area"].tolist()
        np.testing.assert_allclose([c["probs"] for c in row["cells"]], mine[[str(k) for k in range(28)]],
                                   atol=5e-5)
    assert [r.get("truth") for r in data["rows"]] == [[0, 25], [3], None]


def test_outlines_run_between_each_cell_and_its_neighbours(with_cells):
    """Every vertex of a cell's outline lies on the edge between a pixel of the cell on skimage's
    inner boundary and a pixel outside it, and the outline filled covers the cell (IoU >= 0.85)."""
    from skimage.draw import polygon2mask
    from skimage.segmentation import find_boundaries

    _, out, _, _ = with_cells
    data = page_json(layout.folder_report(out))
    for row in data["rows"]:
        assert row["side"] == SIDE  # shown at the field's own side, not the model's 64 px
        labels = cv2.imread(str(layout.cell_mask(layout.cell_outputs(out)["masks"], row["id"])), cv2.IMREAD_UNCHANGED)
        padded = np.pad(labels.astype(np.int32), 1)  # a vertex on the field's border has a pixel outside it
        for c in row["cells"]:
            cell = padded == c["cell"]
            edge = find_boundaries(cell, mode="inner")
            filled = np.zeros(labels.shape, bool)
            for ring in c["rings"]:
                xy = np.array(ring).reshape(-1, 2)
                for x, y in xy:
                    # the two pixels a vertex lies between (in the padded grid): across x if x is whole
                    if float(x).is_integer():
                        a, b = (int(y - 0.5) + 1, int(x) - 1 + 1), (int(y - 0.5) + 1, int(x) + 1)
                    else:
                        a, b = (int(y) - 1 + 1, int(x - 0.5) + 1), (int(y) + 1, int(x - 0.5) + 1)
                    inner = a if cell[a] else b
                    assert cell[a] != cell[b] and edge[inner], (row["id"], c["cell"], x, y)
                filled ^= polygon2mask(labels.shape, xy[:, ::-1] - 0.5)
            mine = labels == c["cell"]
            assert (filled & mine).sum() / (filled | mine).sum() >= 0.85, (row["id"], c["cell"])


def test_a_report_that_is_not_the_toolkits_stops_the_cells_before_anything_is_written(with_cells, tmp_path):
    from hpa.prediction.cells import predict_cells
    from hpa.prediction.inference import PredictOptions

    root, out, ens, _ = with_cells
    mine = tmp_path / "preds.csv"
    shutil.copy(out, mine)
    layout.folder_report(mine).write_text("<html>my own notes</html>")
    with pytest.raises(HPAError, match="report.html: not a report page this toolkit wrote"):
        predict_cells(ens, root / "imgs", mine, opts=PredictOptions(device="cpu"), echo=lambda _: None)
    assert not layout.cell_outputs(mine)["table"].exists()
    assert layout.folder_report(mine).read_text() == "<html>my own notes</html>"


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium; .ci/run does)")
def test_cells_in_a_real_browser_click_sort_and_filter(with_cells):
    playwright = pytest.importorskip("playwright.sync_api")
    from test_folder_report import launch

    _, out, _, _ = with_cells
    table = pd.read_csv(layout.cell_outputs(out)["table"], dtype={"Id": str})
    top = table[[str(k) for k in range(28)]].to_numpy(float).argmax(1)
    data = page_json(layout.folder_report(out))
    with playwright.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(layout.folder_report(out).as_uri())
            page.wait_for_load_state("load")
            cells = page.locator("#cellrows tr")
            assert cells.count() == len(table)
            # sorting by area, smallest first: cells.csv's areas in order
            page.select_option("#csort", "area")
            page.select_option("#corder", "asc")
            areas = [int(cells.nth(i).locator("td").nth(2).inner_text()) for i in range(cells.count())]
            assert areas == sorted(table["area"])
            # filtering by top class: exactly the cells whose largest probability is that class
            k = int(np.bincount(top).argmax())
            page.select_option("#cfilter", str(k))
            assert cells.count() == int((top == k).sum())
            page.select_option("#cfilter", "-1")
            # a click inside a cell on the field's canvas (a point of its mask) shows that cell
            row = data["rows"][0]
            labels = cv2.imread(str(layout.cell_mask(layout.cell_outputs(out)["masks"], row["id"])),
                                cv2.IMREAD_UNCHANGED)
            cell = max(row["cells"], key=lambda c: c["area"])["cell"]
            inside = cv2.distanceTransform((labels == cell).astype(np.uint8), cv2.DIST_L2, 3)
            y, x = np.unravel_index(inside.argmax(), inside.shape)  # the point deepest in it
            page.locator(f'#rows tr[data-id="{row["id"]}"]').click()
            field = page.locator("#field")
            box = field.bounding_box()
            field.click(position={"x": (x + 0.5) * box["width"] / SIDE, "y": (y + 0.5) * box["height"] / SIDE})
            view = page.locator("#cellview")
            assert view.locator("h3").inner_text().startswith(f"Cell {cell} of {row['id']}")
            n_maps = len(row["maps"])
            assert view.locator("canvas[data-cellmap]").count() + view.locator(".empty").count() == n_maps
            assert view.locator(".probs tr").count() == 28
            # a row of the cells table opens its field with the cell shown
            page.select_option("#csort", "id")
            cells.last.click()
            last = table.sort_values(["Id", "cell"]).iloc[-1]
            assert view.locator("h3").inner_text().startswith(f"Cell {last['cell']} of {last['Id']}")
            page.wait_for_timeout(200)  # the pictures drawn
            shots = Path(os.environ.get("HPA_TEST_ARTIFACTS", ROOT / "test-artifacts"))
            shots.mkdir(parents=True, exist_ok=True)
            page.locator("#detail").screenshot(path=str(shots / "cell_report.png"))
            assert errors == []
        finally:
            browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium; .ci/run does)")
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_a_cell_models_own_classes_and_a_field_without_cells(with_cells, tmp_path, monkeypatch):
    """Cells predicted by a cell model of the 2021 classes (its loader stands in here for the download)
    from the user's masks, one of them empty: the page keeps the images' 28 classes and gives the
    cells their 19, a field without cells is still shown, and in Chromium a cell lists the 19."""
    import torch
    from test_cell_models import _CellNet
    from test_folder_report import launch

    from hpa.data.class_sets import HPA2021
    from hpa.prediction import cell_models
    from hpa.prediction.cells import predict_cells
    from hpa.prediction.inference import PredictOptions

    root, out, ens, _ = with_cells
    mine = tmp_path / "out" / "preds.csv"
    shutil.copytree(out.parent, mine.parent, ignore=shutil.ignore_patterns("cell*"))
    masks = tmp_path / "masks"
    masks.mkdir()
    drawn = cv2.imread(str(layout.cell_mask(layout.cell_outputs(out)["masks"], "f0")), cv2.IMREAD_UNCHANGED)
    for sid in ("f0", "f1"):
        cv2.imwrite(str(masks / f"{sid}.png"), drawn)
    cv2.imwrite(str(masks / "f2.png"), np.zeros_like(drawn))
    torch.manual_seed(0)
    from hpa.models import hpa_weights

    monkeypatch.setattr(cell_models, "load_cell_model", lambda name, echo=print: torch.jit.script(_CellNet().eval()))
    monkeypatch.setattr(hpa_weights, "fetch", lambda name, echo=print: tmp_path / "in-the-cache")
    predict_cells(ens, root / "imgs", mine, method="bestfitting-2021", masks=masks, opts=PredictOptions(device="cpu"),
                  echo=lambda _: None)
    data = page_json(layout.folder_report(mine))
    assert len(data["classes"]) == 28 and data["cell_classes"] == list(HPA2021)
    rows = {r["id"]: r for r in data["rows"]}
    assert rows["f2"]["cells"] == [] and len(rows["f0"]["cells"]) == drawn.max()
    assert all(len(c["probs"]) == 19 for c in rows["f0"]["cells"])
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(layout.folder_report(mine).as_uri())
            page.wait_for_load_state("load")
            page.locator("#cellrows tr").first.click()
            view = page.locator("#cellview")
            assert view.locator(".probs tr").count() == 19
            assert any(name in view.locator("h3").inner_text() for name in HPA2021)
            page.locator('#rows tr[data-id="f2"]').click()
            assert page.locator("#detail h2").inner_text() == "f2"
            assert errors == []
        finally:
            browser.close()
