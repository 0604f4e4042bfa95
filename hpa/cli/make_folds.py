r"""Multilabel stratified K folds over the training samples (Kaggle train plus HPAv18 external),
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

from hpa import api
from hpa.cli import Parser, options
from hpa.data.folds import DEFAULT_DUPLICATES, DUPLICATES


def build_parser() -> Parser:
    ap = Parser(__doc__, "input_prep/make_folds.py")
    ap.add_argument("--labels", type=Path, nargs="+", required=True,
                    help="Id,Target CSVs whose union is split (train.csv, then external.csv if any)")
    options.n_folds(ap, default=5)
    options.seed(ap, "seed of the split")
    options.out(ap, "the Id,fold CSV (class counts per fold and the dropped samples beside it)", required=True)
    ap.add_argument("--groups", type=Path, help="Id,group CSV from dedup.py")
    ap.add_argument("--duplicates", choices=DUPLICATES, help="with --groups: keep one sample per duplicate group, "
                    f"keep groups in one fold, or neither [{DEFAULT_DUPLICATES}]")
    ap.add_argument("--drop-conflicts", action="store_true",
                    help="with --duplicates group: fold -1 for duplicate groups with differing labels")
    return ap


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    out = api.split_folds(a.labels, a.out, n_folds=a.n_folds, seed=a.seed, groups=a.groups, duplicates=a.duplicates,
                          drop_conflicts=a.drop_conflicts)
    print(f"folds: {out}")


if __name__ == "__main__":
    from hpa.cli import run

    run(main)
