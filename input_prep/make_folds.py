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
The logic is `hpa.data.folds`.
"""

from __future__ import annotations

from pathlib import Path

from hpa import cli
from hpa.data.folds import DEFAULT_DUPLICATES, DUPLICATES, write_folds


def main(argv: list[str] | None = None) -> None:
    ap = cli.Parser(__doc__)
    ap.add_argument("--labels", type=Path, nargs="+", required=True,
                    help="Id,Target CSVs whose union is split (train.csv, then external.csv if any)")
    ap.add_argument("--n-folds", type=int, default=5, help="number of folds")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split")
    ap.add_argument("--out", type=Path, required=True, help="Id,fold CSV (class counts per fold beside it)")
    ap.add_argument("--groups", type=Path, help="Id,group CSV from dedup.py")
    ap.add_argument("--duplicates", choices=DUPLICATES, default=None,
                    help="with --groups: keep one sample per duplicate group, keep groups in one fold, or neither "
                         f"[default: {DEFAULT_DUPLICATES}]")
    ap.add_argument("--drop-conflicts", action="store_true",
                    help="with --duplicates group: fold -1 for duplicate groups with differing labels")
    a = ap.parse_args(argv)
    if a.drop_conflicts and not a.groups:
        ap.error("--drop-conflicts needs --groups")
    write_folds(a.labels, a.n_folds, a.seed, a.out, a.groups, a.duplicates, a.drop_conflicts)


if __name__ == "__main__":
    cli.run(main)
