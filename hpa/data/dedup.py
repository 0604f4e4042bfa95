"""Near-duplicate search across train, external and test by perceptual hashes
(input_prep/dedup.py is its command line; the recipe calls it in-process)."""

from __future__ import annotations

from collections.abc import Callable
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd

from hpa.core.atomic import atomic_outputs, csv_text
from hpa.core.checks import require_dir
from hpa.core.runtime import progress
from hpa.data import layout
from hpa.data.arrays import read_prepared
from hpa.data.hashing import connected_groups, near_duplicate_pairs, sample_hashes
from hpa.data.images import read_sample
from hpa.data.labels import read_ids, read_labels
from hpa.errors import HPAError, SampleError


def _hash_job(job):
    src, sid, prepared = job
    try:
        img = read_prepared(Path(prepared), sid) if prepared else read_sample(Path(src), sid)
    except (SampleError, FileNotFoundError) as e:
        return sid, None, str(e)
    return sid, sample_hashes(img), None


def hash_dataset(data_dir: Path, size: int | None, workers: int) -> pd.DataFrame:
    rows = []
    for split in layout.present_splits(data_dir):
        ids = read_ids(layout.split_table(data_dir, split))
        store = layout.prepared_dir(data_dir, size, split) if size else None
        use_store = store is not None and store.is_dir()
        jobs = [(str(layout.raw_dir(data_dir, split)), sid, str(store) if use_store else None) for sid in ids]
        with Pool(workers) as pool:
            for sid, h, err in progress(pool.imap(_hash_job, jobs, chunksize=64), total=len(jobs),
                                        desc=f"hash {split}", unit="sample"):
                if err:
                    raise HPAError(err)
                rows.append((sid, split, *h))
    if not rows:
        raise HPAError(f"--data-dir {data_dir}: no train/, test/ or external/ images with their CSVs found")
    return pd.DataFrame(rows, columns=["Id", "split", "h_red", "h_green", "h_blue"])


def find_duplicates(data_dir: Path, out_dir: Path, threshold: int = 16, size: int | None = None, workers: int = 1,
                    echo: Callable[[str], None] = print) -> pd.DataFrame:
    """Hash every sample, find the pairs within `threshold` bits, write the pair, group, leak and
    hash tables to `out_dir` together; returns the pairs."""
    if not 0 <= threshold <= 192:
        raise HPAError(f"--threshold {threshold}: must be within 0..192")
    data_dir = require_dir(data_dir, "--data-dir")
    df = hash_dataset(data_dir, size, workers)
    h = df[["h_red", "h_green", "h_blue"]].to_numpy(np.uint64)
    pairs, dist = near_duplicate_pairs(h, threshold)
    ids, splits = df["Id"].to_numpy(), df["split"].to_numpy()
    pair_df = pd.DataFrame({"Id_a": ids[pairs[:, 0]], "Id_b": ids[pairs[:, 1]], "split_a": splits[pairs[:, 0]],
                            "split_b": splits[pairs[:, 1]], "distance": dist})
    groups = connected_groups(len(df), pairs)
    hashes = df.copy()
    for c in ("h_red", "h_green", "h_blue"):
        hashes[c] = [f"{int(v):016x}" for v in hashes[c]]
    targets = {}
    for table in layout.label_tables(data_dir):
        lab = read_labels(table)
        targets.update(zip(lab["Id"], lab["Target"]))
    leak_rows = []
    for r in pair_df.itertuples():
        if (r.split_a == "test") != (r.split_b == "test"):
            test_id, other = (r.Id_a, r.Id_b) if r.split_a == "test" else (r.Id_b, r.Id_a)
            leak_rows.append((test_id, other, r.distance, targets.get(other, "")))
    out = Path(out_dir)
    with atomic_outputs() as tmp:
        tmp(layout.dedup_file(out, "hashes")).write_text(csv_text(hashes))
        tmp(layout.dedup_file(out, "pairs")).write_text(csv_text(pair_df))
        tmp(layout.dedup_file(out, "groups")).write_text(csv_text(pd.DataFrame({"Id": ids, "group": groups})))
        leaks = pd.DataFrame(leak_rows, columns=["test_Id", "train_Id", "distance", "Target"])
        tmp(layout.dedup_file(out, "leaks")).write_text(csv_text(leaks))
    n_groups = len(set(groups[pairs.ravel()])) if len(pairs) else 0
    echo(f"{len(df)} samples hashed; {len(pair_df)} near-duplicate pairs in {n_groups} groups; "
         f"{len(leak_rows)} test samples with a labelled twin. Written to {out}")
    return pair_df
