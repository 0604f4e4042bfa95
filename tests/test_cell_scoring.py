"""The 2021 single-cell competition's mask encoding and metric (hpa.prediction.cell_scoring), against
pycocotools: its run-length decoding, and its COCOeval (segmentation IoU, one IoU threshold of 0.6,
101 recall points, no limit on detections) on constructed fields of cells."""

from __future__ import annotations

import base64
import zlib

import numpy as np
import pytest
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hpa.prediction.cell_scoring import ScoredCell, cell_map, decode_mask, encode_mask


def test_the_encoding_is_cocos_rle_compressed_and_base64():
    rng = np.random.default_rng(0)
    mask = np.zeros((37, 53), bool)
    mask[5:20, 8:30] = True
    mask[rng.random(mask.shape) < 0.05] = True
    text = encode_mask(mask)
    counts = zlib.decompress(base64.b64decode(text))
    assert np.array_equal(coco_mask.decode({"size": [37, 53], "counts": counts}).astype(bool), mask)
    assert np.array_equal(decode_mask(text, 37, 53), mask)


def field(rng, side: int, n: int) -> np.ndarray:
    """A label mask of n rectangular cells that do not overlap."""
    lab = np.zeros((side, side), np.int32)
    k = 0
    while k < n:
        h, w = rng.integers(6, 16, 2)
        y, x = rng.integers(0, side - h), rng.integers(0, side - w)
        if lab[y:y + h, x:x + w].any():
            continue
        k += 1
        lab[y:y + h, x:x + w] = k
    return lab


def jitter(rng, lab: np.ndarray) -> np.ndarray:
    """The predicted cells: each true cell shifted by a few pixels (some fall below IoU 0.6), a few
    dropped, and a spurious one added."""
    out = np.zeros_like(lab)
    for k in range(1, lab.max() + 1):
        if rng.random() < 0.15:
            continue
        ys, xs = np.nonzero(lab == k)
        dy, dx = rng.integers(-4, 5, 2)
        ys, xs = np.clip(ys + dy, 0, lab.shape[0] - 1), np.clip(xs + dx, 0, lab.shape[1] - 1)
        free = out[ys, xs] == 0
        out[ys[free], xs[free]] = k
    out[0:5, 0:5] = np.where(out[0:5, 0:5] == 0, lab.max() + 1, out[0:5, 0:5])
    return out


def coco_reference(true_masks, truth, pred_masks, predictions, n_classes):
    """AP per class from pycocotools' COCOeval (NaN where it reports -1: no true cell)."""
    images, anns, dets = [], [], []
    for i, img in enumerate(true_masks):
        h, w = true_masks[img].shape
        images.append({"id": i + 1, "height": h, "width": w})
        for cell, classes in truth[img].items():
            rle = coco_mask.encode(np.asfortranarray((true_masks[img] == cell).astype(np.uint8)))
            for c in classes:
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": c + 1, "iscrowd": 0,
                             "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                             "area": float(coco_mask.area(rle)), "bbox": list(coco_mask.toBbox(rle))})
    ids = {img: i + 1 for i, img in enumerate(true_masks)}
    for p in predictions:
        rle = coco_mask.encode(np.asfortranarray((pred_masks[p.image] == p.label).astype(np.uint8)))
        dets.append({"image_id": ids[p.image], "category_id": p.cls + 1, "score": p.confidence,
                     "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c + 1} for c in range(n_classes)]}
    gt.createIndex()
    dt = gt.loadRes(dets)
    ev = COCOeval(gt, dt, "segm")
    ev.params.iouThrs = np.array([0.6])
    ev.params.maxDets = [100000]
    ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
    ev.evaluate()
    ev.accumulate()
    prec = ev.eval["precision"][0, :, :, 0, 0]  # recall points x classes
    return np.array([np.nan if (prec[:, c] < 0).all() else prec[:, c].mean() for c in range(n_classes)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_metric_equals_cocoevals(seed):
    rng = np.random.default_rng(seed)
    n_classes = 5
    true_masks, truth, pred_masks, predictions = {}, {}, {}, []
    scores = iter(rng.permutation(10000) / 10000)  # distinct confidences: no ties to order
    for k in range(4):
        img = f"img{k}"
        true_masks[img] = field(rng, 96, int(rng.integers(3, 9)))
        truth[img] = {c: {int(x) for x in rng.choice(n_classes - 1, rng.integers(1, 3), replace=False)}
                      for c in range(1, true_masks[img].max() + 1)}  # class 4 has no true cell
        pred_masks[img] = jitter(rng, true_masks[img])
        for cell in range(1, pred_masks[img].max() + 1):
            if not (pred_masks[img] == cell).any():
                continue
            for c in rng.choice(n_classes, rng.integers(1, 4), replace=False):
                predictions.append(ScoredCell(img, cell, int(c), float(next(scores))))
    mean, per_class = cell_map(pred_masks, predictions, true_masks, truth, n_classes)
    ref = coco_reference(true_masks, truth, pred_masks, predictions, n_classes)
    np.testing.assert_allclose(per_class, ref, atol=1e-9, equal_nan=True)
    assert np.isnan(per_class[4]) and mean == pytest.approx(np.nanmean(ref))


def test_perfect_and_empty_predictions():
    lab = field(np.random.default_rng(3), 64, 4)
    truth = {"a": {k: {0} for k in range(1, 5)}}
    perfect = [ScoredCell("a", k, 0, 0.9 - k / 10) for k in range(1, 5)]
    assert cell_map({"a": lab}, perfect, {"a": lab}, truth, 2)[0] == pytest.approx(1.0)
    assert cell_map({"a": lab}, [], {"a": lab}, truth, 2)[0] == 0.0
