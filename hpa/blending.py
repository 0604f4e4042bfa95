"""Gathering prediction files per model, and the labels they are scored against."""

from __future__ import annotations

import glob
from collections import defaultdict
from pathlib import Path

import numpy as np

from hpa.labels import labels_matrix, read_labels
from hpa.predictions import PredictionError, parse_name, read_predictions


def expand(patterns: list[str]) -> list[Path]:
    """Quoted glob patterns or plain paths -> sorted unique paths; a pattern that matches nothing
    is an error (a typo should not silently drop a model)."""
    out: set[Path] = set()
    for pat in patterns:
        hits = glob.glob(str(pat))
        if not hits:
            raise PredictionError(f"{pat}: no prediction file matches")
        out.update(Path(h) for h in hits)
    return sorted(out)


def concat_oof(paths: list[Path]) -> tuple[list[str], np.ndarray]:
    """OOF files of the folds of one model -> all their rows; an Id in two folds is an error."""
    ids, probs, seen = [], [], {}
    for p in paths:
        i, pr = read_predictions(p)
        for sid in i:
            if sid in seen:
                raise PredictionError(f"{p}: Id {sid!r} is also in {seen[sid]} (folds must not overlap)")
            seen[sid] = p
        ids += i
        probs.append(pr)
    return ids, np.concatenate(probs)


def mean_test(paths: list[Path]) -> tuple[list[str], np.ndarray]:
    """Test files of the folds of one model -> their mean; all must hold the same Ids."""
    ids0, acc = None, None
    for p in paths:
        ids, pr = read_predictions(p)
        if ids0 is None:
            ids0, acc = ids, pr.copy()
            continue
        if set(ids) != set(ids0):
            raise PredictionError(f"{p}: its Ids differ from {paths[0]} ({len(set(ids) ^ set(ids0))} differ)")
        order = {s: k for k, s in enumerate(ids)}
        acc += pr[[order[s] for s in ids0]]
    return ids0, acc / len(paths)


def group_by_model(paths: list[Path]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = defaultdict(list)
    for p in paths:
        groups[parse_name(p)["model"]].append(p)
    return dict(sorted(groups.items()))


def align(ids: list[str], probs: np.ndarray, order: list[str], what: Path | str) -> np.ndarray:
    """Rows of `probs` reordered to `order`; every Id of `order` must be present, and no other."""
    index = {s: k for k, s in enumerate(ids)}
    missing = [s for s in order if s not in index]
    if missing:
        raise PredictionError(f"{what}: {len(missing)} Ids missing, e.g. {missing[0]!r}")
    if len(ids) != len(order):
        extra = sorted(set(ids) - set(order))
        raise PredictionError(f"{what}: {len(extra)} unexpected Ids, e.g. {extra[0]!r}")
    return probs[[index[s] for s in order]]


def labels_for(ids: list[str], labels_csv: Path) -> np.ndarray:
    lab = read_labels(labels_csv)
    index = dict(zip(lab["Id"], range(len(lab))))
    missing = [s for s in ids if s not in index]
    if missing:
        raise PredictionError(f"{labels_csv}: no labels for {len(missing)} predicted Ids, e.g. {missing[0]!r}")
    return labels_matrix(lab)[[index[s] for s in ids]]
