"""Multilabel stratified K folds over the training samples (Kaggle train plus HPAv18 external),
with near-duplicates removed or kept inside one fold.

    python input_prep/make_folds.py --labels data/hpa/train.csv data/hpa/external.csv --n-folds 5 --seed 0 \
        --out data/hpa/folds.csv --groups data/hpa/dedup/duplicate_groups.csv --duplicates drop

Writes `Id,fold` over the union of the --labels tables and, beside it, `<out stem>_class_counts.csv`
(samples per class per fold) and `<out stem>_dropped.csv` (Id, reason, kept: the samples left out
with fold -1). With --groups (from dedup.py), --duplicates says what happens to a group of
near-duplicates: `drop` keeps one member (from the first --labels table first, then the smallest
Id) and leaves the rest out, as Zhang et al. 2021 removed duplicates; `group` keeps them all in one
fold, stratified on the union of their labels, so twins never sit on both sides of a split;
`ignore` treats them as independent samples. A group whose members' label sets differ is left out
whole with `drop` (its labels contradict each other), and with `group` when --drop-conflicts.
Stratification: iterative-stratification's MultilabelStratifiedKFold (Sechidis et al. 2011).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

from hpa import cli
from hpa.io import atomic_outputs, csv_text
from hpa.labels import NUM_CLASSES, LabelError, count_reasons, labels_matrix, read_label_tables, read_table


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


def main(argv: list[str] | None = None) -> None:
    ap = cli.Parser(__doc__)
    ap.add_argument("--labels", type=Path, nargs="+", required=True,
                    help="Id,Target CSVs whose union is split (train.csv, then external.csv if any)")
    ap.add_argument("--n-folds", type=int, default=5, help="number of folds")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split")
    ap.add_argument("--out", type=Path, required=True, help="Id,fold CSV (class counts per fold beside it)")
    ap.add_argument("--groups", type=Path, help="Id,group CSV from dedup.py")
    ap.add_argument("--duplicates", choices=["drop", "group", "ignore"], default="group",
                    help="with --groups: keep one sample per duplicate group, keep groups in one fold, or neither")
    ap.add_argument("--drop-conflicts", action="store_true",
                    help="with --duplicates group: fold -1 for duplicate groups with differing labels")
    a = ap.parse_args(argv)
    if a.n_folds < 2:
        ap.error(f"--n-folds {a.n_folds}: need at least 2")
    if a.drop_conflicts and not a.groups:
        ap.error("--drop-conflicts needs --groups")
    if a.duplicates == "drop" and not a.groups:
        ap.error("--duplicates drop needs --groups (from input_prep/dedup.py)")
    labels = read_label_tables(a.labels)
    if len(labels) < a.n_folds:
        raise LabelError(f"--n-folds {a.n_folds}: {', '.join(map(str, a.labels))} hold only {len(labels)} samples")
    groups = None
    if a.groups:
        g = read_table(a.groups, ("Id", "group"))
        groups = dict(zip(g["Id"], g["group"]))
    y = labels_matrix(labels)
    ids = labels["Id"].tolist()
    dropped: dict[str, str] = {}
    if a.duplicates == "drop":
        dropped = duplicates_to_drop(ids, y, groups, labels["table"].to_numpy())
    elif a.drop_conflicts:
        dropped = {i: "duplicate group with conflicting labels" for i, c in zip(ids, conflicting(ids, y, groups)) if c}
    keep = np.array([i not in dropped for i in ids])
    folds = np.full(len(ids), -1)
    folds[keep] = make_folds([i for i, k in zip(ids, keep) if k], y[keep], a.n_folds, a.seed,
                             groups if a.duplicates == "group" else None)
    if dropped:
        print(f"left out {len(dropped)} samples (fold -1): {count_reasons(list(dropped.values()))}")
    counts = fold_class_counts(y[keep], folds[keep], a.n_folds)
    counts_path = a.out.with_name(a.out.stem + "_class_counts.csv")
    dropped_path = a.out.with_name(a.out.stem + "_dropped.csv")
    with atomic_outputs() as tmp:
        tmp(a.out).write_text(csv_text(pd.DataFrame({"Id": ids, "fold": folds})))
        tmp(counts_path).write_text(csv_text(counts))
        tmp(dropped_path).write_text(csv_text(pd.DataFrame({"Id": list(dropped), "reason": list(dropped.values())})))
    print(counts.to_string(index=False))
    print(f"largest deviation of a class share in a fold from the whole: "
          f"{max_proportion_deviation(y[keep], folds[keep], a.n_folds):.3f} percentage points")
    print(f"wrote {a.out} and {counts_path}")


if __name__ == "__main__":
    cli.run(main)
