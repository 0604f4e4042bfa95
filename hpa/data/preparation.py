"""Preparation: every sample resized once to its working side into the prepared store
(hpa.data.layout), in worker processes. A re-run only redoes what is missing, cut, or older than its
sources (full-size TIFFs fetched after the PNGs were prepared)."""

from __future__ import annotations

from collections.abc import Callable
from multiprocessing import Pool
from pathlib import Path

import pandas as pd

from hpa.core.atomic import atomic_write_csv
from hpa.core.checks import require_dir, require_file
from hpa.core.runtime import progress
from hpa.data import layout
from hpa.data.arrays import is_prepared, write_prepared
from hpa.data.images import read_sample, stain_files
from hpa.data.labels import read_ids
from hpa.data.resolution import resize_to_working_side
from hpa.errors import HPAError, SampleError


def _source_mtime(src_dir: Path, sid: str) -> int:
    """Newest modification time of the files a sample is read from (0 when they are missing, so
    that reading reports the error). A full-size TIFF fetched after the 512 px PNG was prepared is
    newer than the prepared array, and the sample is prepared again from it."""
    try:
        return max(p.stat().st_mtime_ns for p in stain_files(src_dir, sid).values())
    except (SampleError, OSError):
        return 0


def prepare_one(job: tuple) -> tuple[str, str | None]:
    src_dir, dst_dir, sid, size, large_size = job
    dst = layout.prepared_path(dst_dir, sid)
    if dst.is_file() and is_prepared(dst) and dst.stat().st_mtime_ns >= _source_mtime(Path(src_dir), sid):
        return sid, None
    try:
        img = resize_to_working_side(read_sample(Path(src_dir), sid), size, large_size)
    except SampleError as e:
        return sid, str(e)
    write_prepared(dst, img)
    return sid, None


def prepare_dataset(data_dir: Path, size: int, large_size: int | None = None,
                    splits: tuple[str, ...] = tuple(layout.SPLIT_TABLES), workers: int = 1,
                    shard: tuple[int, int] = (0, 1), echo: Callable[[str], None] = print) -> dict[str, list]:
    """Prepare every present split at `size`; returns the failures per split ((Id, reason) lists,
    also written to prepared/<size>/failures_<split>.csv)."""
    data_dir = require_dir(data_dir, "--data-dir")
    for split in splits:  # a table that is there but is not a file is named, not passed over
        if layout.split_table(data_dir, split).exists():
            require_file(layout.split_table(data_dir, split), "table")
    present = layout.present_splits(data_dir, splits)
    if not present:
        raise HPAError(f"--data-dir {data_dir}: none of the splits {list(splits)} is there (each needs its table, "
                       f"e.g. train.csv, and its image folder, e.g. train/; see data/README.md)")
    failures: dict[str, list] = {}
    for split in present:
        ids = sorted(read_ids(layout.split_table(data_dir, split)))[shard[0]::shard[1]]
        dst = layout.prepared_dir(data_dir, size, split)
        dst.mkdir(parents=True, exist_ok=True)
        jobs = [(str(layout.raw_dir(data_dir, split)), str(dst), sid, size, large_size) for sid in ids]
        failed = []
        with Pool(workers) as pool:
            it = pool.imap_unordered(prepare_one, jobs, chunksize=16)
            for sid, err in progress(it, total=len(jobs), desc=f"prepare {split}", unit="sample"):
                if err:
                    failed.append((sid, err))
        report = layout.failure_list(dst, split)
        if failed:
            failures[split] = failed
            atomic_write_csv(report, pd.DataFrame(failed, columns=["Id", "error"]))
            echo(f"{split}: {len(failed)} of {len(ids)} samples failed, listed in {report}; first: {failed[0][1]}")
        else:
            report.unlink(missing_ok=True)  # an old list of failures that a re-run has fixed
            echo(f"{split}: {len(ids)} samples ready in {dst}")
    return failures
