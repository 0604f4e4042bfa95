"""Input preparation speed: hashing, the 120k pair search, prepare, and loader reads vs PNG decoding.

    python bench/bench_input.py [--n 120000]

Real images from ../shared/data/hpa-samples; the pair search runs on synthetic hashes (random
64-bit hashes with planted near-duplicates) because only 8 real samples are at hand.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from results import SHARED, write_section

from hpa.data.arrays import read_prepared as load_prepared
from hpa.data.hashing import near_duplicate_pairs, sample_hashes
from hpa.data.images import read_sample, write_sample_png
from hpa.data.labels import COLORS
from hpa.data.preparation import prepare_one


def rate(fn, items, repeats=1) -> float:
    t = time.perf_counter()
    for _ in range(repeats):
        for it in items:
            fn(it)
    return repeats * len(items) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=120_000)
    a = ap.parse_args()
    images = SHARED / "hpa-samples" / "images"
    rows = pd.read_csv(SHARED / "hpa-samples" / "labels.csv").values
    full = [r[0] for r in rows if r[2] == "2048x2048"]
    small_id = next(r[0] for r in rows if r[2] == "512x512")
    tmp = Path(tempfile.mkdtemp())
    lines = []
    torch.set_num_threads(1)
    try:
        # 1. prepare: decode 4 full-size PNGs, resize 2048 -> 768, write .npy (one core)
        src = tmp / "train"
        src.mkdir()
        for sid in full:
            for c in COLORS:
                shutil.copy(images / f"{sid}_{c}.png", src / f"{sid}_{c}.png")
        dst = tmp / "prepared"
        t = time.perf_counter()
        for sid in full:
            prepare_one((str(src), str(dst), sid, 768, None))
        prep_rate = len(full) / (time.perf_counter() - t)
        lines.append(f"| prepare 2048 px PNG -> 768 px .npy, 1 core | {prep_rate:.2f} samples/s |")

        # 2. hashing three channels of a prepared 768 px sample (one core)
        arrays = [load_prepared(dst, sid) for sid in full]
        h_rate = rate(sample_hashes, arrays, repeats=30)
        lines.append(f"| pHash of r, g, b of a 768 px sample, 1 core | {h_rate:.0f} samples/s |")

        # 3. loader: 512 px sample as 4 PNGs vs as one prepared .npy, random order, warm cache
        img = read_sample(images, small_id)
        png_dir, npy_dir = tmp / "png", tmp / "npy"
        npy_dir.mkdir()
        ids = [f"s{i}" for i in range(200)]
        for sid in ids:
            write_sample_png(png_dir, sid, img)
            np.save(npy_dir / f"{sid}.npy", img)
        order = list(np.random.default_rng(0).permutation(ids))
        png_rate = rate(lambda s: read_sample(png_dir, s), order, repeats=2)
        npy_rate = rate(lambda s: load_prepared(npy_dir, s), order, repeats=10)
        lines.append(f"| read a 512 px sample: decode 4 PNGs, 1 core | {png_rate:.0f} samples/s |")
        lines.append(f"| read a 512 px sample: prepared .npy, 1 core | {npy_rate:.0f} samples/s "
                     f"(**{npy_rate / png_rate:.0f}x** the PNGs) |")
    finally:
        shutil.rmtree(tmp)

    # 4. all near-duplicate pairs among n samples (2 cores)
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    h = rng.integers(0, 2 ** 63, (a.n, 3), dtype=np.int64).astype(np.uint64)
    planted = rng.choice(a.n, (200, 2), replace=False)
    for i, j in planted:
        h[j] = h[i] ^ np.uint64(0b101)  # 2 bits apart
    t = time.perf_counter()
    pairs, _ = near_duplicate_pairs(h, threshold=16)
    took = time.perf_counter() - t
    found = {tuple(sorted(p)) for p in pairs.tolist()}
    assert all(tuple(sorted(p)) in found for p in planted.tolist())
    lines.append(f"| all near-duplicate pairs among {a.n:,} samples (3 x 64-bit), 2 cores | {took:.1f} s "
                 f"({a.n * (a.n - 1) // 2 / took / 1e9:.2f} G pairs/s; all 200 planted pairs found) |")
    body = "| step | throughput |\n|---|---|\n" + "\n".join(lines)
    write_section("input preparation", f"python bench/bench_input.py --n {a.n}", body)


if __name__ == "__main__":
    main()
