"""Per-class decision thresholds that maximise macro F1 on out-of-fold predictions.

A class is predicted when its probability is >= its threshold. Methods:
- `paper`: one global threshold on the grid 0.10, 0.15, ..., 0.90 that maximises macro F1,
  then, class by class, the grid value that maximises that class's F1, starting from the
  global one (Zhang et al. 2021, "testing-time optimization"). Per-class F1 depends only on
  the class's own column, so the greedy pass is exact on the grid.
- `exact`: each class's optimum over every cut point of its sorted probabilities, O(n log n).
  The threshold is placed midway between the last kept and the first dropped probability.
- `shrink`: the exact optimum pulled toward the paper's global threshold by the class's
  positives n: t = (n * t_exact + k * t_global) / (n + k), k = 10. A rare class's exact optimum
  rests on a handful of samples and does not carry over to new data; a common class keeps its
  own optimum. On real 2018 predictions (bench/RESULTS.md) this beats `exact` on held-out rows.
- `flat`: 0.5 for every class.
"""

from __future__ import annotations

import numpy as np

from hpa.prediction.metrics import f1_per_class

PAPER_GRID = np.round(np.arange(0.10, 0.9001, 0.05), 2)


def _grid_f1(probs: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """F1 of every class at every grid threshold: shape (len(grid), C)."""
    return np.stack([f1_per_class(y, probs >= g) for g in grid])


def paper_thresholds(probs: np.ndarray, y: np.ndarray, grid: np.ndarray = PAPER_GRID) -> np.ndarray:
    f1 = _grid_f1(probs, y, grid)  # computed once: the global step and the greedy pass both read it
    gi = int(np.argmax(f1.mean(1)))
    best = np.full(probs.shape[1], grid[gi], dtype=float)
    for c in range(probs.shape[1]):
        k = int(np.argmax(f1[:, c]))
        if f1[k, c] > f1[gi, c]:  # move away from the global value only for a real gain
            best[c] = grid[k]
    return best


def exact_threshold(p: np.ndarray, t: np.ndarray, default: float = 0.5) -> tuple[float, float]:
    """Best threshold of one class and its F1. `p` probabilities, `t` 0/1 truth."""
    n_pos = int((t > 0.5).sum())
    if n_pos == 0 or len(p) == 0:
        return default, 0.0
    order = np.argsort(-p, kind="stable")
    ps, ts = p[order], (t[order] > 0.5)
    tp = np.cumsum(ts)
    k = np.arange(1, len(p) + 1)
    f1 = 2 * tp / (k + n_pos)
    # only cut after the last of a run of tied probabilities
    valid = np.append(ps[1:] < ps[:-1], True)
    f1 = np.where(valid, f1, -1.0)
    i = int(np.argmax(f1))
    if i + 1 < len(ps):
        thr = (ps[i] + ps[i + 1]) / 2
    else:
        thr = ps[i]
    return float(thr), float(f1[i])


def exact_thresholds(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.array([exact_threshold(probs[:, c], y[:, c])[0] for c in range(probs.shape[1])])


def global_threshold(probs: np.ndarray, y: np.ndarray, grid: np.ndarray = PAPER_GRID) -> float:
    """The single grid threshold with the best macro F1 (the paper's first step)."""
    return float(grid[int(np.argmax(_grid_f1(probs, y, grid).mean(1)))])


def shrunk_thresholds(probs: np.ndarray, y: np.ndarray, k: float = 10.0) -> np.ndarray:
    n = (y > 0.5).sum(0)
    return (n * exact_thresholds(probs, y) + k * global_threshold(probs, y)) / (n + k)


def apply_thresholds(probs: np.ndarray, thresholds: np.ndarray, fill_empty: bool = True) -> np.ndarray:
    """Binary predictions. With `fill_empty`, a sample with no class at or above its threshold gets
    the one class with the highest probability/threshold ratio, since every HPA sample has at
    least one label."""
    thresholds = np.asarray(thresholds, dtype=float)
    pred = probs >= thresholds
    if fill_empty:
        empty = ~pred.any(1)
        if empty.any():
            ratio = probs[empty] / np.maximum(thresholds, 1e-12)
            pred[np.flatnonzero(empty), ratio.argmax(1)] = True
    return pred


METHODS = ("paper", "exact", "shrink", "flat")
DEFAULT_METHOD = "shrink"  # the one default of find_thresholds.py, hpa.fit_thresholds and this function


def fit_thresholds(probs: np.ndarray, y: np.ndarray, method: str = DEFAULT_METHOD) -> np.ndarray:
    if method == "paper":
        return paper_thresholds(probs, y)
    if method == "exact":
        return exact_thresholds(probs, y)
    if method == "shrink":
        return shrunk_thresholds(probs, y)
    if method == "flat":
        return np.full(probs.shape[1], 0.5)
    from hpa.errors import ConfigError

    raise ConfigError(f"unknown threshold method {method!r}; choose from {', '.join(METHODS)}")




def per_class_table(probs: np.ndarray, y: np.ndarray, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    pred = probs >= thresholds
    t = y > 0.5
    tp = (pred & t).sum(0)
    return {
        "f1": f1_per_class(y, pred),
        "precision": tp / np.maximum(pred.sum(0), 1),
        "recall": tp / np.maximum(t.sum(0), 1),
        "support": t.sum(0),
        "threshold": np.asarray(thresholds, float),
    }
