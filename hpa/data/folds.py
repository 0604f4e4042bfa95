"""Multilabel stratified folds with near-duplicates dropped, grouped in one fold, or ignored.

Stratification: iterative-stratification's MultilabelStratifiedKFold (Sechidis et al. 2011).
`input_prep/make_folds.py` is the command line and `write_folds` its work (the recipe calls it
in-process); the ablation builds its `duplicates` variants here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

from hpa.core.atomic import atomic_outputs, csv_text
from hpa.data import layout
from hpa.data.labels import NUM_CLASSES, count_reasons, labels_matrix, read_label_tables, read_table
from hpa.errors import LabelError

DUPLICATES = ("drop", "group", "ignore")
# what happens to a group of near-duplicates, everywhere (script, API, recipe): the paper removed them
DEFAULT_DUPLICATES = "drop"


def make_folds(ids: list[str], y: np.ndarray, k: int, seed: int, groups: dict[str, str] | None = None) -> np.ndarray:
    """Fold index per sample."""
    group_of = np.array([groups.get(i, i) if groups else i for i in ids])
    uniq, inv = np.unique(group_of, return_inverse=True)
    gy = np.zeros((len(uniq), y.shape[1]), np.float32)
    np.maximum.at(gy, inv, y)
    if len(uniq) < k:
        raise ValueError(f"{len(uniq)} groups cannot fill {k} folds")
    gfold = np.empty(len(uniq), int)
    mskf = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for f, (_, val) in enumerate(mskf.split(np.zeros(len(uniq)), gy)):
        gfold[val] = f
    return gfold[inv]


def conflicting(ids: list[str], y: np.ndarray, groups: dict[str, str]) -> np.ndarray:
    """True for samples in a duplicate group whose members do not all share one label set."""
    group_of = np.array([groups.get(i, i) for i in ids])
    keys = np.array([hash(r.tobytes()) for r in (y > 0.5)])
    df = pd.DataFrame({"g": group_of, "k": keys})
    n_sets = df.groupby("g")["k"].transform("nunique").to_numpy()
    return n_sets > 1


def duplicates_to_drop(ids: list[str], y: np.ndarray, groups: dict[str, str], rank: np.ndarray) -> dict[str, str]:
    """Id -> why it is left out under `--duplicates drop`: all but the best-ranked member of each
    group, and every member of a group with conflicting label sets."""
    conflict = conflicting(ids, y, groups)
    out: dict[str, str] = {}
    members: dict[str, list[int]] = {}
    for k, i in enumerate(ids):
        members.setdefault(groups.get(i, i), []).append(k)
    for ks in members.values():
        if len(ks) < 2:
            continue
        if conflict[ks[0]]:
            out.update({ids[k]: "duplicate group with conflicting labels" for k in ks})
            continue
        keep = min(ks, key=lambda k: (rank[k], ids[k]))
        out.update({ids[k]: f"near-duplicate of {ids[keep]}" for k in ks if k != keep})
    return out


def fold_class_counts(y: np.ndarray, folds: np.ndarray, k: int) -> pd.DataFrame:
    df = pd.DataFrame({f"fold{f}": y[folds == f].sum(0).astype(int) for f in range(k)})
    df.insert(0, "class", range(NUM_CLASSES))
    df["total"] = y.sum(0).astype(int)
    return df


def max_proportion_deviation(y: np.ndarray, folds: np.ndarray, k: int) -> float:
    """Largest |share of class c in fold f - share of class c overall|, in percentage points."""
    whole = y.mean(0)
    return float(max(np.abs(y[folds == f].mean(0) - whole).max() for f in range(k)) * 100)


def assign_folds(ids: list[str], y: np.ndarray, table: np.ndarray, k: int, seed: int,
                 groups: dict[str, str] | None, duplicates: str = "group",
                 drop_conflicts: bool = False) -> tuple[np.ndarray, dict[str, str]]:
    """Fold per sample (-1: left out) and Id -> why it was left out. `table` ranks the members of
    a duplicate group for `drop` (the first label table's member is kept)."""
    if duplicates not in DUPLICATES:
        raise ValueError(f"duplicates: {duplicates!r}; choose from {', '.join(DUPLICATES)}")
    dropped: dict[str, str] = {}
    if groups and duplicates == "drop":
        dropped = duplicates_to_drop(ids, y, groups, table)
    elif groups and drop_conflicts:
        dropped = {i: "duplicate group with conflicting labels" for i, c in zip(ids, conflicting(ids, y, groups)) if c}
    keep = np.array([i not in dropped for i in ids])
    folds = np.full(len(ids), -1)
    folds[keep] = make_folds([i for i, kp in zip(ids, keep) if kp], y[keep], k, seed,
                             groups if duplicates == "group" else None)
    return folds, dropped


def read_groups(path: Path) -> dict[str, str]:
    g = read_table(path, ("Id", "group"))
    return dict(zip(g["Id"], g["group"]))


def write_folds(tables: list[Path], n_folds: int, seed: int, out: Path, groups_csv: Path | None = None,
                duplicates: str | None = None, drop_conflicts: bool = False,
                echo: Callable[[str], None] = print) -> np.ndarray:
    """Fold per sample of the union of `tables`, written as `out` (Id,fold) with its class counts
    and the left-out samples beside it (hpa.data.layout.folds_companion), all together."""
    if n_folds < 2:
        raise LabelError(f"--n-folds {n_folds}: need at least 2")
    # unset: the default where there are duplicate groups to act on (group with drop_conflicts, which
    # drops only the groups whose labels differ), nothing without them
    duplicates = duplicates or (("group" if drop_conflicts else DEFAULT_DUPLICATES) if groups_csv else "ignore")
    if (drop_conflicts or duplicates == "drop") and not groups_csv:
        raise LabelError(f"--duplicates {duplicates}{' --drop-conflicts' if drop_conflicts else ''} needs --groups "
                         "(from input_prep/dedup.py)")
    labels = read_label_tables(tables)
    if len(labels) < n_folds:
        raise LabelError(f"--n-folds {n_folds}: {', '.join(map(str, tables))} hold only {len(labels)} samples")
    y = labels_matrix(labels)
    ids = labels["Id"].tolist()
    folds, dropped = assign_folds(ids, y, labels["table"].to_numpy(), n_folds, seed,
                                  read_groups(groups_csv) if groups_csv else None, duplicates, drop_conflicts)
    keep = folds >= 0
    if dropped:
        echo(f"left out {len(dropped)} samples (fold -1): {count_reasons(list(dropped.values()))}")
    counts = fold_class_counts(y[keep], folds[keep], n_folds)
    counts_path, dropped_path = layout.folds_companion(out, "class_counts"), layout.folds_companion(out, "dropped")
    with atomic_outputs() as tmp:
        tmp(out).write_text(csv_text(pd.DataFrame({"Id": ids, "fold": folds})))
        tmp(counts_path).write_text(csv_text(counts))
        tmp(dropped_path).write_text(csv_text(pd.DataFrame({"Id": list(dropped), "reason": list(dropped.values())})))
    echo(f"{counts.to_string(index=False)}\nlargest deviation of a class share in a fold from the whole: "
         f"{max_proportion_deviation(y[keep], folds[keep], n_folds):.3f} percentage points\n"
         f"wrote {out} and {counts_path}")
    return folds
