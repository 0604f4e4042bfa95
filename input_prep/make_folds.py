"""Multilabel stratified K folds, keeping duplicate groups inside one fold.

    python input_prep/make_folds.py --labels data/hpa/train.csv --folds 5 --seed 0 --out data/hpa/folds.csv \
        [--groups data/hpa/dedup/duplicate_groups.csv]

Writes `Id,fold` and, beside it, `<out stem>_class_counts.csv` (samples per class per fold).
With --groups, the labels of a group are the union of its members' labels and whole groups are
stratified, so near-duplicates never sit on both sides of a train/validation split. With
--drop-conflicts, the members of a group whose label sets differ get fold -1: training and
validation both leave them out (their labels contradict each other).
Stratification: iterative-stratification's MultilabelStratifiedKFold (Sechidis et al. 2011).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

from hpa import cli
from hpa.io import atomic_outputs, csv_text
from hpa.labels import NUM_CLASSES, LabelError, labels_matrix, read_labels, read_table


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


def fold_class_counts(y: np.ndarray, folds: np.ndarray, k: int) -> pd.DataFrame:
    df = pd.DataFrame({f"fold{f}": y[folds == f].sum(0).astype(int) for f in range(k)})
    df.insert(0, "class", range(NUM_CLASSES))
    df["total"] = y.sum(0).astype(int)
    return df


def max_proportion_deviation(y: np.ndarray, folds: np.ndarray, k: int) -> float:
    """Largest |share of class c in fold f - share of class c overall|, in percentage points."""
    whole = y.mean(0)
    return float(max(np.abs(y[folds == f].mean(0) - whole).max() for f in range(k)) * 100)


def main(argv: list[str] | None = None) -> None:
    ap = cli.Parser(__doc__)
    ap.add_argument("--labels", type=Path, required=True, help="Id,Target CSV")
    ap.add_argument("--n-folds", type=int, default=5, help="number of folds")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split")
    ap.add_argument("--out", type=Path, required=True, help="Id,fold CSV (class counts per fold beside it)")
    ap.add_argument("--groups", type=Path, help="Id,group CSV from dedup.py")
    ap.add_argument("--drop-conflicts", action="store_true", help="fold -1 for duplicates with differing labels")
    a = ap.parse_args(argv)
    if a.n_folds < 2:
        ap.error(f"--n-folds {a.n_folds}: need at least 2")
    if a.drop_conflicts and not a.groups:
        ap.error("--drop-conflicts needs --groups")
    labels = read_labels(a.labels)
    if len(labels) < a.n_folds:
        raise LabelError(f"--n-folds {a.n_folds}: {a.labels} has only {len(labels)} samples")
    groups = None
    if a.groups:
        g = read_table(a.groups, ("Id", "group"))
        groups = dict(zip(g["Id"], g["group"]))
    y = labels_matrix(labels)
    folds = make_folds(labels["Id"].tolist(), y, a.n_folds, a.seed, groups)
    if a.drop_conflicts:
        drop = conflicting(labels["Id"].tolist(), y, groups)
        folds[drop] = -1
        print(f"dropped {int(drop.sum())} samples of duplicate groups with conflicting labels (fold -1)")
    keep = folds >= 0
    counts = fold_class_counts(y[keep], folds[keep], a.n_folds)
    counts_path = a.out.with_name(a.out.stem + "_class_counts.csv")
    with atomic_outputs() as tmp:
        tmp(a.out).write_text(csv_text(pd.DataFrame({"Id": labels["Id"], "fold": folds})))
        tmp(counts_path).write_text(csv_text(counts))
    print(counts.to_string(index=False))
    print(f"largest deviation of a class share in a fold from the whole: "
          f"{max_proportion_deviation(y[keep], folds[keep], a.n_folds):.3f} percentage points")
    print(f"wrote {a.out} and {counts_path}")


if __name__ == "__main__":
    cli.run(main)
