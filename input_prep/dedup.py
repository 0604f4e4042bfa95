"""Find near-duplicate samples across train, external and test by perceptual hashes.

    python input_prep/dedup.py --data-dir data/hpa --out data/hpa/dedup [--threshold 16] [--size 768]

A pair is a near-duplicate when the 64-bit perceptual hashes (pHash, hpa/hashing.py) of its red,
green and blue channels differ in at most --threshold of their 192 bits in total. (1st place of
the 2018 competition required each channel's hash within a bound; a dim channel's hash is
noisier, though, and the summed distance tolerates one noisy channel. On the 8 real samples,
rescaled, JPEG re-encoded and brightened copies differ in 0-6 bits and different samples in 78 or
more; on the demo, its injected copies in 0-4 and different samples in 28 or more.)
Hashes are taken from the prepared images (prepared/<size>/) when they exist, else from the
raw files. Writes to --out:
- duplicate_pairs.csv   Id_a,Id_b,split_a,split_b,distance (bits, summed over channels)
- duplicate_groups.csv  Id,group (connected components; a lone sample is its own group)
- leaks.csv             test_Id,train_Id,distance,Target: test samples with a labelled twin
- hashes.csv            Id,split,h_red,h_green,h_blue
"""

from __future__ import annotations

from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from hpa import cli
from hpa.dataset import load_prepared, prepared_dir
from hpa.errors import HPAError
from hpa.hashing import connected_groups, near_duplicate_pairs, sample_hashes
from hpa.io import SampleError, atomic_outputs, csv_text, read_sample
from hpa.labels import read_ids, read_labels

SPLITS = {"train": "train.csv", "external": "external.csv", "test": "sample_submission.csv"}


def _hash_job(job):
    src, sid, prepared = job
    try:
        img = load_prepared(Path(prepared), sid) if prepared else read_sample(Path(src), sid)
    except (SampleError, FileNotFoundError) as e:
        return sid, None, str(e)
    return sid, sample_hashes(img), None


def hash_dataset(data_dir: Path, size: int | None, workers: int) -> pd.DataFrame:
    rows = []
    for split, table in SPLITS.items():
        if not (data_dir / table).is_file() or not (data_dir / split).is_dir():
            continue
        ids = read_ids(data_dir / table)
        store = prepared_dir(data_dir, size, split) if size else None
        use_store = store is not None and store.is_dir()
        jobs = [(str(data_dir / split), sid, str(store) if use_store else None) for sid in ids]
        with Pool(workers) as pool:
            for sid, h, err in tqdm(pool.imap(_hash_job, jobs, chunksize=64), total=len(jobs),
                                    desc=f"hash {split}", unit="sample"):
                if err:
                    raise HPAError(err)
                rows.append((sid, split, *h))
    if not rows:
        raise HPAError(f"--data-dir {data_dir}: no train/, test/ or external/ images with their CSVs found")
    return pd.DataFrame(rows, columns=["Id", "split", "h_red", "h_green", "h_blue"])


def main(argv: list[str] | None = None) -> None:
    ap = cli.Parser(__doc__)
    ap.add_argument("--data-dir", type=Path, required=True, help="dataset directory")
    ap.add_argument("--out-dir", type=Path, required=True, help="where the pair, group, leak and hash tables go")
    ap.add_argument("--threshold", type=int, default=16, help="max differing bits over r, g, b (0..192)")
    ap.add_argument("--size", type=cli.positive_int, help="hash prepared/<size>/ images instead of raw files")
    ap.add_argument("--workers", type=cli.positive_int, default=cli.DEFAULT_WORKERS, help="worker processes")
    a = ap.parse_args(argv)
    if not 0 <= a.threshold <= 192:
        ap.error(f"--threshold {a.threshold}: must be within 0..192")
    df = hash_dataset(a.data_dir, a.size, a.workers)
    h = df[["h_red", "h_green", "h_blue"]].to_numpy(np.uint64)
    pairs, dist = near_duplicate_pairs(h, a.threshold)
    ids, splits = df["Id"].to_numpy(), df["split"].to_numpy()
    pair_df = pd.DataFrame({"Id_a": ids[pairs[:, 0]], "Id_b": ids[pairs[:, 1]], "split_a": splits[pairs[:, 0]],
                            "split_b": splits[pairs[:, 1]], "distance": dist})
    groups = connected_groups(len(df), pairs)
    out = a.out_dir
    hashes = df.copy()
    for c in ("h_red", "h_green", "h_blue"):
        hashes[c] = [f"{int(v):016x}" for v in hashes[c]]
    targets = {}
    for split in ("train", "external"):
        table = a.data_dir / ("train.csv" if split == "train" else "external.csv")
        if table.is_file():
            lab = read_labels(table)
            targets.update(zip(lab["Id"], lab["Target"]))
    leak_rows = []
    for r in pair_df.itertuples():
        if (r.split_a == "test") != (r.split_b == "test"):
            test_id, other = (r.Id_a, r.Id_b) if r.split_a == "test" else (r.Id_b, r.Id_a)
            leak_rows.append((test_id, other, r.distance, targets.get(other, "")))
    with atomic_outputs() as tmp:
        tmp(out / "hashes.csv").write_text(csv_text(hashes))
        tmp(out / "duplicate_pairs.csv").write_text(csv_text(pair_df))
        tmp(out / "duplicate_groups.csv").write_text(csv_text(pd.DataFrame({"Id": ids, "group": groups})))
        tmp(out / "leaks.csv").write_text(csv_text(pd.DataFrame(leak_rows, columns=["test_Id", "train_Id", "distance",
                                                                                    "Target"])))
    n_groups = len(set(groups[pairs.ravel()])) if len(pairs) else 0
    print(f"{len(df)} samples hashed; {len(pair_df)} near-duplicate pairs in {n_groups} groups; "
          f"{len(leak_rows)} test samples with a labelled twin. Written to {out}")


if __name__ == "__main__":
    cli.run(main)
