"""The offline segmenter (hpa.prediction.cells): measured against the cells the demo generator
draws (its label masks are the truth), and run on the real HPA fields of ../shared."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import cell_by_hand
from hpa.data.demo import render_cells
from hpa.prediction.cell_scoring import _ious
from hpa.prediction.cells import segment_cells


def test_demo_cells_are_found_at_iou_0_6():
    """20 demo fields (256 px, 2x2 or 3x3 cells touching each other): at least 90% of the true cells
    have a segmented cell at IoU >= 0.6, with a mean best IoU of at least 0.8, and few extra cells."""
    matched = total = extra = 0
    best = []
    for seed in range(20):
        img, truth, _ = render_cells([0, 25], 256, np.random.default_rng(seed))
        lab = segment_cells(img)
        assert lab.shape == truth.shape and lab.dtype == np.int32
        assert sorted(np.unique(lab[lab > 0])) == list(range(1, lab.max() + 1))  # numbered 1..n
        m, _, tl = _ious(lab, truth)
        total += len(tl)
        matched += int((m >= 0.6).any(0).sum())
        extra += int((m.max(1) < 0.6).sum()) if m.size else lab.max()
        best += list(m.max(0))
    assert matched >= 0.9 * total, (matched, total)
    assert np.mean(best) >= 0.8
    assert extra <= 0.1 * total, extra


def test_a_field_with_no_nucleus_has_no_cells():
    rng = np.random.default_rng(0)
    img = (rng.random((300, 400, 4)) * 12).astype(np.uint8)  # camera noise only
    img[..., 0] += 40  # and some microtubule stain
    assert segment_cells(img).max() == 0
    assert segment_cells(np.zeros((64, 64, 4), np.uint8)).max() == 0


def test_a_cell_cut_by_the_border_is_kept_and_sizes_are_kept():
    """Fields cropped through their cells (non-square): the label mask has the field's own size, and
    a cell the border cuts but that keeps most of itself (and so its nucleus) in the field is found.
    One cut off with its nucleus outside has no seed: that it is not found is the method's limit."""
    kept = found = 0
    for seed in range(6):
        img, truth, _ = render_cells([0], 256, np.random.default_rng(seed))
        crop, tcrop = img[12:, 18:], truth[12:, 18:]
        lab = segment_cells(crop)
        assert lab.shape == tcrop.shape
        m, _, tl = _ious(lab, tcrop)
        whole = np.bincount(truth.ravel(), minlength=truth.max() + 1)
        inside = np.bincount(tcrop.ravel(), minlength=truth.max() + 1)
        edge = {int(t) for t in np.unique(np.concatenate([tcrop[0], tcrop[:, 0]])) if t and inside[t] >= 0.6 * whole[t]}
        kept += len(edge)
        found += sum(m[:, list(tl).index(t)].max() >= 0.6 for t in edge)
    assert kept >= 5 and found >= 0.8 * kept, (found, kept)


def test_the_real_fields_give_cells(real_samples):
    """The 8 real HPA fields (512, 2048 and 3072 px): each gives a plausible number of cells (5 to
    80; their outlines were looked at when the segmenter was written, bench/RESULTS.md), each cell
    a connected area of at least 0.1% of the field, the mask at the field's size."""
    from scipy import ndimage as ndi

    from hpa.data.images import read_sample

    images, rows = real_samples
    for sid, _, _ in rows:
        img = read_sample(images, sid)
        lab = segment_cells(img)
        assert lab.shape == img.shape[:2]
        assert 5 <= lab.max() <= 80, (sid, lab.max())
        areas = np.bincount(lab.ravel())[1:]
        assert areas.min() >= 0.001 * lab.size, (sid, areas.min())
        pieces = [ndi.label(lab == k)[1] for k in range(1, lab.max() + 1)]
        assert max(pieces) <= 2, (sid, pieces)  # a nearest-neighbour resize may nick one off


@pytest.mark.parametrize("side", [32, 3072])
def test_the_smallest_and_largest_fields(side):
    img, _, _ = render_cells([0], 256, np.random.default_rng(1))
    import cv2

    big = cv2.resize(img, (side, side), interpolation=cv2.INTER_LINEAR)
    lab = segment_cells(big)
    assert lab.shape == (side, side)
    if side == 3072:
        assert lab.max() >= 3


def test_class_map_assignment():
    """A class whose map lies in one cell: that cell keeps the image's probability, a cell with half
    the evidence half of it, one without none; an unmapped class: every cell the image's."""
    from hpa.prediction.cells import cell_scores

    labels = np.zeros((20, 30), np.int32)
    labels[:, :10], labels[:, 10:20], labels[:, 20:] = 1, 2, 3
    m = np.zeros((20, 30))
    m[:, :10], m[:, 10:20] = 1.0, 0.5
    scores = cell_scores(labels, np.array([0.8, 0.3]), {0: m})
    np.testing.assert_allclose(scores[:, 0], [0.8, 0.4, 0.0])
    np.testing.assert_allclose(scores[:, 1], [0.3, 0.3, 0.3])


def test_a_folder_gives_masks_cells_and_the_2021_submission(tmp_path):
    """predict_tta.py --images DIR --bundle B --cells on demo fields: a 16-bit label mask per field
    (the segmenter's), cells.csv with each cell's box, area and centroid as scikit-image's regionprops
    measures them and a probability per class, and the 2021 submission whose masks decode to the
    cells; its per-cell mAP against the drawn truth is a number in [0, 1]."""
    import cv2
    import pandas as pd
    from scripts import run_script
    from skimage.measure import regionprops

    from hpa.config import load_arch_config
    from hpa.data.images import read_sample, write_sample_png
    from hpa.models import build_model
    from hpa.prediction.bundle import write_bundle
    from hpa.prediction.cell_scoring import ScoredCell, cell_map, decode_mask
    from hpa.prediction.ensemble import Ensemble, Member

    cfg = load_arch_config("tiny_cnn", size=128, fold=0, pretrained="none")
    ens = Ensemble([Member("tiny_cnn_128", 128, [build_model("tiny_cnn", **cfg.model).eval()], ("id",), [128], "off",
                           [0], [cfg], [{}])], "equal", np.ones(1), np.full(28, 0.5))
    bundle = write_bundle(ens, tmp_path / "b", training_data={"labels": {}, "folds_sha256": ""},
                          summary={"oof_macro_f1": 0.1, "oof_macro_f1_at_0.5": 0.1, "oof_rows": 2})
    truth_masks, truth = {}, {}
    for k in range(3):
        img, lab, per_cell = render_cells([0, 25], 128, np.random.default_rng(10 + k))
        write_sample_png(tmp_path / "imgs", f"f{k}", img)
        truth_masks[f"f{k}"], truth[f"f{k}"] = lab, per_cell
    out = tmp_path / "out" / "preds.csv"
    r = run_script("predict_tta.py", "--bundle", bundle, "--images", tmp_path / "imgs", "--out", out, "--cells",
                   "--no-report", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    cells = pd.read_csv(out.with_name("cells.csv"))
    sub = pd.read_csv(out.with_name("cell_submission.csv")).set_index("ID")
    pred_masks, scored = {}, []
    for k in range(3):
        sid = f"f{k}"
        mask = cv2.imread(str(out.with_name("cell_masks") / f"{sid}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint16 and mask.max() > 0
        assert np.array_equal(mask, segment_cells(read_sample(tmp_path / "imgs", sid)))
        mine = cells[cells.Id == sid].set_index("cell")
        for p in regionprops(mask.astype(np.int32)):
            row = mine.loc[p.label]
            assert (row.y0, row.x0, row.y1, row.x1) == p.bbox and row.area == p.area
            assert (row.cy, row.cx) == pytest.approx(p.centroid, abs=0.06)
        words = sub.loc[sid, "PredictionString"].split()
        assert sub.loc[sid, "ImageWidth"] == 128 and len(words) % 3 == 0
        seen = {}
        for cls, conf, rle in zip(words[::3], words[1::3], words[2::3]):
            seen.setdefault(rle, []).append((int(cls), float(conf)))
        decoded = [decode_mask(rle, 128, 128) for rle in seen]
        assert sorted(int(d.sum()) for d in decoded) == sorted(int((mask == c).sum()) for c in range(1, mask.max() + 1))
        pred_masks[sid] = mask.astype(np.int32)
        for rle, pairs in seen.items():
            cell = int(np.bincount(mask[decode_mask(rle, 128, 128)]).argmax())
            scored += [ScoredCell(sid, cell, c, conf) for c, conf in pairs]
    from hpa.data.class_sets import KAGGLE2018_TO_HPA2021

    truth21 = {s: {c: {KAGGLE2018_TO_HPA2021[k] for k in ks} for c, ks in t.items()} for s, t in truth.items()}
    mean, _ = cell_map(pred_masks, scored, truth_masks, truth21, 19)
    assert 0.0 <= mean <= 1.0


def test_the_demo_writes_its_cells_and_can_show_a_class_in_part_of_them(tmp_path):
    """make_demo's cells/ holds each image's drawn cells (render_cells' labels) and the classes each
    shows; with --partial-cells some cells of an image lack a class the image has, and the image
    label is the union of its cells'; the per-cell mAP of perfect cells is 1."""
    import cv2
    import pandas as pd

    import hpa
    from hpa.data import layout
    from hpa.data.labels import parse_target
    from hpa.prediction.cells import evaluate_cells

    data = hpa.make_demo(tmp_path / "d", n_train=34, n_test=30, size=96, seed=1, min_per_class=1,
                         partial_cells=0.5)
    truth = layout.demo_cells(data, "test")
    cells = pd.read_csv(truth["table"], dtype={"Id": str, "Target": str}, keep_default_na=False)
    labels = pd.read_csv(data / "test_labels.csv", dtype=str).set_index("Id")["Target"]
    partial = 0
    for sid, rows in cells.groupby("Id"):
        mask = cv2.imread(str(truth["masks"] / f"{sid}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint16 and sorted(rows["cell"]) == list(range(1, mask.max() + 1))
        shown = [set(map(int, t.split())) for t in rows["Target"]]
        assert set().union(*shown) == set(parse_target(labels[sid]))
        partial += any(s != set().union(*shown) for s in shown)
    assert partial >= 5
    # perfect cells: the truth's own masks, each cell's classes at 0.9 and the others at 0.01
    out = tmp_path / "pred" / "p.csv"
    masks = layout.cell_outputs(out)["masks"]
    masks.mkdir(parents=True)
    rows = []
    for sid, g in cells.groupby("Id"):
        (masks / f"{sid}.png").write_bytes((truth["masks"] / f"{sid}.png").read_bytes())
        for cell, target in zip(g["cell"], g["Target"]):
            p = np.full(28, 0.01)
            p[[int(k) for k in target.split()]] = 0.9
            rows.append({"Id": sid, "cell": cell, **{str(k): p[k] for k in range(28)}})
    pd.DataFrame(rows).to_csv(layout.cell_outputs(out)["table"], index=False)
    score, per_class = evaluate_cells(out, truth)
    assert score == pytest.approx(1.0)


def test_crops_are_the_cell_alone_and_predicted_by_the_ensemble():
    """cell_crops: a cell's box, black outside it, padded to a square; crop_scores: the ensemble's
    probabilities on that crop resized to the member's side (the model run here by hand)."""
    import cv2
    import torch

    from hpa.config import load_arch_config
    from hpa.models import build_model
    from hpa.prediction.cells import cell_crops, crop_scores
    from hpa.prediction.ensemble import Ensemble, Member
    from hpa.prediction.inference import PredictOptions

    img, labels, _ = render_cells([0], 128, np.random.default_rng(4))
    crops = cell_crops(img, labels)
    k = 2
    square = cell_by_hand(img, labels, k, square=True)
    side = square.shape[0]
    assert np.array_equal(crops[k - 1], square)
    torch.manual_seed(0)
    cfg = load_arch_config("tiny_cnn", size=64, fold=0, pretrained="none")
    model = build_model("tiny_cnn", **cfg.model).eval()
    ens = Ensemble([Member("tiny_cnn_64", 64, [model], ("id", "hflip"), [64], "off", [0])], "equal", np.ones(1),
                   np.full(28, 0.5))
    got = crop_scores(ens, crops, PredictOptions(batch_size=3, device="cpu"))
    x = torch.from_numpy(cv2.resize(square, (64, 64), interpolation=cv2.INTER_AREA if side > 64 else
                                    cv2.INTER_LINEAR).transpose(2, 0, 1).copy()).float()[None] / 255
    with torch.no_grad():
        want = (torch.sigmoid(model(x)) + torch.sigmoid(model(x.flip(-1)))) / 2
    np.testing.assert_allclose(got[k - 1], want[0].numpy(), atol=1e-6)
    assert got.shape == (labels.max(), 28)
