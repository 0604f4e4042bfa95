"""Macro F1 over the 28 classes, the competition and paper metric."""

from __future__ import annotations

import numpy as np


def f1_per_class(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per-class F1 = 2TP / (2TP + FP + FN), 0 where a class has neither truth nor predictions.

    Same as scikit-learn's `f1_score(average=None, zero_division=0)`.
    """
    t = np.asarray(y_true) > 0.5
    p = np.asarray(y_pred) > 0.5
    tp = (t & p).sum(0)
    denom = t.sum(0) + p.sum(0)
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(f1_per_class(y_true, y_pred).mean())


def best_constant_macro_f1(y_true: np.ndarray) -> float:
    """Macro F1 of the best predictor that ignores the image: it predicts the same label set for
    every sample, and a class's F1 is 2p/(1+p) if it is in the set (p = prevalence) and 0 if not,
    so the best set contains every class present."""
    p = (np.asarray(y_true) > 0.5).mean(0)
    return float(np.mean(2 * p / (1 + p)))
