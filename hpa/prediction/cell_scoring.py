"""The 2021 Kaggle "Human Protein Atlas - Single Cell Classification" formats and metric.

- A cell's mask as that competition's submissions encoded it: the COCO run-length encoding of the
  binary mask (pycocotools, column-major), zlib-compressed at the best level, base64 text.
- Its metric: mean over the classes of the average precision of the cells predicted for a class,
  a predicted cell counting as correct when it overlaps an unmatched true cell of that class at
  IoU >= 0.6 (matched in descending confidence, each true cell at most once, within its image),
  precision interpolated at 101 recall points as COCO's evaluation does; classes with no true cell
  are left out of the mean. Written here with numpy; tests/test_cell_scoring.py checks it against
  pycocotools' COCOeval on constructed masks.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IOU = 0.6  # the 2021 competition's threshold
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def encode_mask(mask: np.ndarray) -> str:
    """A binary mask (H x W) as the 2021 competition's submissions wrote it."""
    import warnings

    from pycocotools import mask as coco_mask

    with warnings.catch_warnings():  # pycocotools 2.0.11 passes copy=False to numpy 2, which warns; the result is right
        warnings.simplefilter("ignore", DeprecationWarning)
        rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)[:, :, None]))[0]
    return base64.b64encode(zlib.compress(rle["counts"], zlib.Z_BEST_COMPRESSION)).decode()


def decode_mask(text: str, height: int, width: int) -> np.ndarray:
    """The binary mask of an encoded cell (the image's height and width are not in the text)."""
    from pycocotools import mask as coco_mask

    counts = zlib.decompress(base64.b64decode(text))
    return coco_mask.decode({"size": [height, width], "counts": counts}).astype(bool)


@dataclass(frozen=True)
class ScoredCell:
    image: str
    label: int  # the cell's number in its image's label mask
    cls: int
    confidence: float


def _ious(pred_labels: np.ndarray, true_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every predicted cell with every true cell of one image, from the two label masks:
    (IoU matrix, predicted cell numbers, true cell numbers)."""
    p = np.unique(pred_labels[pred_labels > 0])
    t = np.unique(true_labels[true_labels > 0])
    if len(p) == 0 or len(t) == 0:
        return np.zeros((len(p), len(t))), p, t
    pi = np.searchsorted(p, pred_labels.ravel())
    ti = np.searchsorted(t, true_labels.ravel())
    both = (pred_labels.ravel() > 0) & (true_labels.ravel() > 0)
    inter = np.zeros((len(p), len(t)))
    np.add.at(inter, (pi[both], ti[both]), 1)
    area_p = np.bincount(pi[pred_labels.ravel() > 0], minlength=len(p))
    area_t = np.bincount(ti[true_labels.ravel() > 0], minlength=len(t))
    return inter / (area_p[:, None] + area_t[None, :] - inter), p, t


def average_precision(scores: np.ndarray, correct: np.ndarray, n_true: int) -> float:
    """COCO's 101-point interpolated average precision of detections ranked by score."""
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(correct[order])
    fp = np.cumsum(~correct[order])
    recall = tp / n_true
    precision = tp / np.maximum(tp + fp, np.finfo(float).eps)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the best precision at any higher recall
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    return float(np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0).mean())


def cell_map(pred_masks: dict[str, np.ndarray], predictions: Sequence[ScoredCell], true_masks: dict[str, np.ndarray],
             truth: dict[str, dict[int, set[int]]], n_classes: int, iou: float = IOU) -> tuple[float, np.ndarray]:
    """(mAP, AP per class; NaN for a class with no true cell). `pred_masks` / `true_masks`: per image,
    the label mask of the predicted / true cells; `predictions`: a confidence per (image, cell,
    class); `truth`: per image, per true cell number, its classes."""
    matrices = {img: _ious(pred_masks[img], true_masks[img]) for img in true_masks if img in pred_masks}
    ap = np.full(n_classes, np.nan)
    for c in range(n_classes):
        n_true = sum(c in classes for cells in truth.values() for classes in cells.values())
        if n_true == 0:
            continue
        mine = sorted((p for p in predictions if p.cls == c), key=lambda p: -p.confidence)
        correct = np.zeros(len(mine), bool)
        taken: dict[str, set[int]] = {}
        for k, p in enumerate(mine):
            if p.image not in matrices:
                continue
            m, plabels, tlabels = matrices[p.image]
            row = np.searchsorted(plabels, p.label)
            if row >= len(plabels) or plabels[row] != p.label:
                continue
            best, best_iou = None, min(iou, 1 - 1e-10)
            for j, t in enumerate(tlabels):  # the unmatched true cell of class c it overlaps most
                if c not in truth[p.image].get(int(t), set()) or int(t) in taken.get(p.image, set()):
                    continue
                if m[row, j] >= best_iou:
                    best, best_iou = int(t), m[row, j]
            if best is not None:
                taken.setdefault(p.image, set()).add(best)
                correct[k] = True
        ap[c] = average_precision(np.array([p.confidence for p in mine]), correct, n_true) if mine else 0.0
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan"), ap
