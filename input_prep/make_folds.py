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
whole with `drop` (its labels contradict each other), and with `group` when --drop-conflicts. The logic is `hpa.folds`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hpa import cli
from hpa.folds import DUPLICATES, assign_folds, fold_class_counts, max_proportion_deviation
from hpa.io import atomic_outputs, csv_text
from hpa.labels import LabelError, count_reasons, labels_matrix, read_label_tables, read_table


def main(argv: list[str] | None = None) -> None:
    ap = cli.Parser(__doc__)
    ap.add_argument("--labels", type=Path, nargs="+", required=True,
                    help="Id,Target CSVs whose union is split (train.csv, then external.csv if any)")
    ap.add_argument("--n-folds", type=int, default=5, help="number of folds")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split")
    ap.add_argument("--out", type=Path, required=True, help="Id,fold CSV (class counts per fold beside it)")
    ap.add_argument("--groups", type=Path, help="Id,group CSV from dedup.py")
    ap.add_argument("--duplicates", choices=DUPLICATES, default="group",
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
    folds, dropped = assign_folds(ids, y, labels["table"].to_numpy(), a.n_folds, a.seed, groups, a.duplicates,
                                  a.drop_conflicts)
    keep = folds >= 0
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
