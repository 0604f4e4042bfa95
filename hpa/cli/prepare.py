"""Resize every sample once to the working size into the storage the training loader reads.

    python input_prep/prepare.py --data-dir data/hpa --size 768 --workers 16
    python input_prep/prepare.py --data-dir data/hpa --size 768 --shard 3/50   # one array-job task

Reads `<split>/<Id>_<color>.{png,tif,tiff,jpg}` for the Ids of train.csv (split train),
sample_submission.csv (test) and external.csv (external), whichever exist, and writes
`prepared/<size>/<split>/<Id>.npy` (H x W x 4 uint8, RGBY). Sources of 3072 px and more become
`--large-size` (default size x 4/3: 768 -> 1024), smaller ones `--size` (the paper's rule).
Prepared samples of the right shape, newer than their sources, are skipped, so a re-run only does
what is missing or changed (full-size TIFFs fetched after the PNGs were prepared).
Samples that fail are listed in prepared/<size>/failures_<split>.csv and the exit code is 1.
"""

from __future__ import annotations

import argparse

from hpa import api
from hpa.cli import Parser, options
from hpa.data.layout import SPLIT_TABLES


def parse_shard(s: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in s.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {s!r}: expected i/n, e.g. 0/10") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--shard {s!r}: need 0 <= i < n")
    return i, n


def build_parser() -> Parser:
    ap = Parser(__doc__, "input_prep/prepare.py")
    options.data_dir(ap)
    ap.add_argument("--size", type=options.positive_int, required=True, help="working side for sources up to 2048 px")
    ap.add_argument("--large-size", type=options.positive_int, help="working side for 3072 px sources [size x 4/3]")
    ap.add_argument("--splits", nargs="+", default=list(SPLIT_TABLES), choices=list(SPLIT_TABLES),
                    help="splits to prepare")
    options.workers(ap)
    ap.add_argument("--shard", type=parse_shard, default=(0, 1), help="i/n: prepare every n-th sample from i")
    return ap


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    failures = api.prepare(a.data_dir, a.size, large_size=a.large_size, splits=a.splits, workers=max(a.workers, 1),
                           shard=a.shard)
    return 1 if any(failures.values()) else 0  # listed above and in prepared/<size>/failures_<split>.csv


if __name__ == "__main__":
    from hpa.cli import run

    run(main)
