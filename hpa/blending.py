"""Blending: gathering prediction files per model, checking they were made against the same folds
and labels, the blend weights (equal, or greedy ensemble selection, which no library here
provides), and the submission check."""

from __future__ import annotations

import glob
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from hpa.errors import RunError
from hpa.io import file_sha256
from hpa.labels import NUM_CLASSES, LabelError, labels_matrix, read_folds, read_labels
from hpa.metrics import macro_f1
from hpa.predictions import PredictionError, parse_name, read_predictions
from hpa.thresholds import fit_thresholds


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


def restrict(ids: list[str], probs: np.ndarray, keep: set[str]) -> tuple[list[str], np.ndarray]:
    rows = [k for k, s in enumerate(ids) if s in keep]
    return [ids[k] for k in rows], probs[rows]


def labels_for(ids: list[str], labels_csv: Path) -> np.ndarray:
    lab = read_labels(labels_csv)
    index = dict(zip(lab["Id"], range(len(lab))))
    missing = [s for s in ids if s not in index]
    if missing:
        raise PredictionError(f"{labels_csv}: no labels for {len(missing)} predicted Ids, e.g. {missing[0]!r}")
    return labels_matrix(lab)[[index[s] for s in ids]]


def read_sidecars(paths: list[Path]) -> dict[Path, dict]:
    """The `.json` sidecars that predict_tta.py writes beside its files (absent for files made elsewhere)."""
    out = {}
    for p in paths:
        side = Path(p).with_suffix(".json")
        if side.is_file():
            try:
                out[Path(p)] = json.loads(side.read_text())
            except ValueError as e:
                raise PredictionError(f"{side}: unreadable sidecar ({e})") from None
    return out


def check_oof_provenance(oof_paths: list[Path], labels_csv: Path, allow_missing: bool) -> list[str]:
    """Refuse OOF files made against other labels or other folds than each other; check that the
    OOF files cover every Id of their folds table. Returns notes for the report (files without a
    sidecar cannot be checked; missing coverage when `allow_missing`)."""
    if not Path(labels_csv).is_file():
        raise LabelError(f"{labels_csv}: file not found")
    sides = read_sidecars(oof_paths)
    notes = []
    unchecked = [p for p in oof_paths if p not in sides]
    if unchecked:
        notes.append(f"{len(unchecked)} OOF file(s) have no provenance sidecar (not made by predict_tta.py), so their "
                     f"folds and labels were not checked, e.g. {unchecked[0]}")
    if not sides:
        return notes
    labels_hash = file_sha256(labels_csv)
    for p, s in sides.items():
        if s.get("labels_sha256") != labels_hash:
            raise RunError(f"{p}: predicted by a run trained with other labels than {labels_csv}; retrain or pass "
                           "the labels it was trained with")
    folds = {s.get("folds_sha256") for s in sides.values()}
    if len(folds) > 1:
        first = next(iter(sides))
        other = next(p for p, s in sides.items() if s.get("folds_sha256") != sides[first].get("folds_sha256"))
        raise RunError(f"{other}: made against other folds than {first}; every model's OOF must come from the same "
                       "folds table")
    side = next(iter(sides.values()))
    folds_csv = Path(side["folds_csv"])
    if not folds_csv.is_file() or file_sha256(folds_csv) != side["folds_sha256"]:
        raise RunError(f"{folds_csv}: changed or missing since the OOF files were made (e.g. {next(iter(sides))}); "
                       "re-run prediction with the runs' folds")
    expected = {i for i, f in read_folds(folds_csv).items() if f >= 0}
    for model, paths in group_by_model(oof_paths).items():
        have = set()
        for p in paths:
            have.update(read_predictions(p)[0])
        missing = sorted(expected - have)
        if missing:
            msg = (f"model {model}: its OOF files cover {len(have)} of the {len(expected)} Ids of {folds_csv} "
                   f"({len(missing)} missing, e.g. {missing[0]!r}; is a fold's file absent?)")
            if not allow_missing:
                raise RunError(msg + "; predict every fold, or pass --allow-missing-oof to blend on the rows present")
            notes.append(msg)
    return notes


def greedy_weights(oofs: list[np.ndarray], y: np.ndarray, rounds: int, method: str = "shrink") -> np.ndarray:
    """Greedy ensemble selection with replacement (Caruana et al., ICML 2004): start from the best
    single model, repeatedly add the model whose inclusion gives the best OOF macro F1 at thresholds
    fitted by `method`. Weights are the selection counts of the best-scoring round (so never below
    the best single model)."""
    def score(p: np.ndarray) -> float:
        return macro_f1(y, p >= fit_thresholds(p, y, method))

    counts = np.zeros(len(oofs))
    total = np.zeros_like(oofs[0])
    best, best_counts = -1.0, None
    for _ in range(rounds):
        scores = [score((total + o) / (counts.sum() + 1)) for o in oofs]
        k = int(np.argmax(scores))
        counts[k] += 1
        total += oofs[k]
        if scores[k] > best:
            best, best_counts = scores[k], counts.copy()
    return best_counts / best_counts.sum()


def validate_submission(sub: pd.DataFrame, expected: list[str], path: Path) -> None:
    if list(sub["Id"]) != expected:
        raise PredictionError(f"{path}: submission Ids differ from sample_submission")
    for i, t in enumerate(sub["Predicted"]):
        parts = t.split()
        if not parts or [int(v) for v in parts] != sorted({int(v) for v in parts}) or any(
                not 0 <= int(v) < NUM_CLASSES for v in parts):
            raise PredictionError(f"{path}, row {i + 2}: bad Predicted {t!r}")
