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
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from hpa import cli
from hpa.dataset import prepared_dir, resize_to_working_side
from hpa.errors import HPAError
from hpa.io import SampleError, atomic_save, atomic_write_csv, channel_path, find_format, read_sample
from hpa.labels import COLORS, read_ids

SPLITS = {"train": "train.csv", "test": "sample_submission.csv", "external": "external.csv"}


def _is_done(path: Path) -> bool:
    try:
        arr = np.load(path, mmap_mode="r")
        return arr.ndim == 3 and arr.shape[2] == 4 and arr.dtype == np.uint8
    except (OSError, ValueError):
        return False


def _source_mtime(src_dir: Path, sid: str) -> int:
    """Newest modification time of the files a sample is read from (0 when they are missing, so
    that reading reports the error). A full-size TIFF fetched after the 512 px PNG was prepared is
    newer than the prepared array, and the sample is prepared again from it."""
    try:
        ext = find_format(src_dir, sid)
        return max(channel_path(src_dir, sid, c, ext).stat().st_mtime_ns for c in COLORS)
    except (SampleError, OSError):
        return 0


def prepare_one(job: tuple) -> tuple[str, str | None]:
    src_dir, dst_dir, sid, size, large_size = job
    dst = Path(dst_dir) / f"{sid}.npy"
    if dst.is_file() and _is_done(dst) and dst.stat().st_mtime_ns >= _source_mtime(Path(src_dir), sid):
        return sid, None
    try:
        img = resize_to_working_side(read_sample(Path(src_dir), sid), size, large_size)
    except SampleError as e:
        return sid, str(e)
    atomic_save(dst, lambda tmp: _write_npy(tmp, img))
    return sid, None


def _write_npy(path: Path, img: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object, because np.save would append .npy to a name
        np.save(f, np.ascontiguousarray(img))


def parse_shard(s: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in s.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {s!r}: expected i/n, e.g. 0/10") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--shard {s!r}: need 0 <= i < n")
    return i, n


def main(argv: list[str] | None = None) -> int:
    ap = cli.Parser(__doc__)
    ap.add_argument("--data-dir", type=Path, required=True, help="dataset directory")
    ap.add_argument("--size", type=cli.positive_int, required=True, help="working side for sources up to 2048 px")
    ap.add_argument("--large-size", type=cli.positive_int, help="working side for 3072 px sources (default size*4/3)")
    ap.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS), help="splits to prepare")
    ap.add_argument("--workers", type=cli.positive_int, default=cli.DEFAULT_WORKERS, help="worker processes")
    ap.add_argument("--shard", type=parse_shard, default=(0, 1), help="i/n: prepare every n-th sample from i")
    a = ap.parse_args(argv)
    if not a.data_dir.is_dir():
        raise HPAError(f"--data-dir {a.data_dir}: no such directory")
    present = [s for s in a.splits if (a.data_dir / SPLITS[s]).is_file() and (a.data_dir / s).is_dir()]
    if not present:
        raise HPAError(f"--data-dir {a.data_dir}: none of the splits {a.splits} is there (each needs its table, "
                       f"e.g. train.csv, and its image folder, e.g. train/; see data/README.md)")
    status = 0
    for split in present:
        table = a.data_dir / SPLITS[split]
        ids = sorted(read_ids(table))[a.shard[0]::a.shard[1]]
        dst = prepared_dir(a.data_dir, a.size, split)
        dst.mkdir(parents=True, exist_ok=True)
        jobs = [(str(a.data_dir / split), str(dst), sid, a.size, a.large_size) for sid in ids]
        failures = []
        with Pool(a.workers) as pool:
            it = pool.imap_unordered(prepare_one, jobs, chunksize=16)
            for sid, err in tqdm(it, total=len(jobs), desc=f"prepare {split}", unit="sample"):
                if err:
                    failures.append((sid, err))
        if failures:
            status = 1
            out = dst.parent / f"failures_{split}.csv"
            atomic_write_csv(out, pd.DataFrame(failures, columns=["Id", "error"]))
            print(f"{split}: {len(failures)} of {len(ids)} samples failed, listed in {out}; first: {failures[0][1]}")
        else:
            print(f"{split}: {len(ids)} samples ready in {dst}")
    return status


if __name__ == "__main__":
    cli.run(lambda argv: sys.exit(main(argv)))
