"""Rare-class oversampling: repeat samples of rare classes a bounded number of times.

A sample is repeated ceil(target / n_c) times for the rarest class c it carries, where n_c is
the class's count in the training set and target = `target_fraction` x the number of training
samples, and never more than `max_repeat` times: the paper oversamples minority classes "a few
times" only, because repeating a handful of images many times overfits them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hpa.labels import CLASS_NAMES


def oversample_plan(y: np.ndarray, target_fraction: float, max_repeat: int) -> np.ndarray:
    """Repeat count (>= 1) of every sample."""
    if max_repeat < 1 or target_fraction < 0:
        raise ValueError(f"oversampling: max_repeat >= 1 and target_fraction >= 0 needed, got "
                         f"{max_repeat}, {target_fraction}")
    t = y > 0.5
    counts = t.sum(0)
    target = target_fraction * len(y)
    need = np.where(counts > 0, np.ceil(target / np.maximum(counts, 1)), 1)  # per class
    per_sample = np.where(t, need[None, :], 1).max(1)
    return np.clip(per_sample, 1, max_repeat).astype(int)


def class_counts_table(y: np.ndarray, repeats: np.ndarray) -> pd.DataFrame:
    t = y > 0.5
    return pd.DataFrame({"class": range(len(CLASS_NAMES)), "name": CLASS_NAMES, "count": t.sum(0).astype(int),
                         "oversampled": (t * repeats[:, None]).sum(0).astype(int)})
