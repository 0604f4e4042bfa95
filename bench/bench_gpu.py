"""GPU figures of the paper recipe, one command (about 8 minutes on one H100-class GPU):

    python bench/bench_gpu.py [--steps 2] [--members se_resnext50_768,...]

Per recipe member at its real size, crop and effective batch (micro-batches as training picks them):
images/s of whole optimizer steps with bf16 and channels_last, and for the first member also fp16 +
GradScaler, NCHW, and torch.compile; the full paper model (ACP + buffering head + E-loss focal +
hard sampler) against the bare backbone step (average pooling, linear head, BCE), as a ratio; peak
memory at the paper batch; and the data loader's samples/s with 16 workers on prepared 768 px
samples against what the GPU consumes. Writes the "GPU: paper recipe" section of bench/RESULTS.md.
Without CUDA it prints one line and exits 0.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def loader_samples_per_s(workers: int, n: int = 512, side: int = 768, crop: int = 512) -> float:
    """Samples/s of the training DataLoader (prepared .npy store, random crops and augmentation)."""
    import functools

    from torch.utils.data import DataLoader

    from hpa.data.arrays import write_prepared
    from hpa.data.dataset import HPADataset
    from hpa.data.resolution import crop_side

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        ids = [f"s{k:04d}" for k in range(n)]
        for sid in ids:
            write_prepared(Path(tmp) / f"{sid}.npy", rng.integers(0, 255, (side, side, 4), dtype=np.uint8))
        ds = HPADataset(tmp, ids, np.zeros((n, 28), np.float32), seed=0,
                        crop_for=functools.partial(crop_side, size=side, crop=crop))
        dl = DataLoader(ds, batch_size=32, shuffle=True, num_workers=workers, persistent_workers=False)
        t0, seen = time.perf_counter(), 0
        for x, _ in dl:
            seen += len(x)
        return seen / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2, help="timed optimizer steps per measurement")
    ap.add_argument("--members", help="comma-separated member names (default: every member of the paper recipe)")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; nothing measured (run it on a machine with a GPU)")
        return 0
    from results import write_section

    from hpa.pipeline.plan import timed_steps
    from hpa.pipeline.recipe import load_recipe, member_config

    device = torch.device("cuda")
    members = load_recipe("paper").members
    if a.members:
        members = [m for m in members if m.name in a.members.split(",")]
    data_dir = Path(tempfile.mkdtemp())  # member configs need a data directory; nothing is read from it
    rows, first = [], True
    for m in members:
        cfg = member_config(m, data_dir, 0)
        variants = {"bf16, channels_last": {}}
        if first:
            variants.update({"fp16 + GradScaler, channels_last": {"amp": "fp16"},
                             "bf16, NCHW": {"channels_last": False},
                             "bf16, channels_last, compile": {"compile": True},
                             "bare backbone (avg pool, linear head, BCE, no hard sampler)": {
                                 "loss": "bce", "hard_k": None, "model": {**cfg.model, "pool": "avg",
                                                                          "head_hidden": [], "head_dropout": []}}})
        for name, change in variants.items():
            c = cfg.model_copy(update=change)
            torch.cuda.empty_cache()
            t0 = time.perf_counter()
            micro, ips, peak = timed_steps(c, device, c.size, a.steps)
            rows.append((m.name, name, micro, -(-c.batch_size // micro), peak / 2**30, ips,
                         time.perf_counter() - t0))
            print(rows[-1], flush=True)
        first = False
    full = next(r[5] for r in rows if r[1] == "bf16, channels_last")
    bare = next((r[5] for r in rows if r[1].startswith("bare")), None)
    gpu_rate = max(r[5] for r in rows if r[0] == members[0].name)
    loader = loader_samples_per_s(16)
    body = ["| member | variant | micro-batch x accumulation | peak memory (GiB) | images/s | seconds |",
            "|---|---|---|---|---|---|"]
    body += [f"| {r[0]} | {r[1]} | {r[2]} x {r[3]} | {r[4]:.1f} | {r[5]:.1f} | {r[6]:.0f} |" for r in rows]
    body += ["", f"Full paper model / bare backbone step, {members[0].name}: "
             + (f"{bare / full:.2f}x the bare step's images/s" if bare else "not measured") + ".",
             f"Data loader, 16 workers, prepared 768 px samples with 512 px crops: {loader:.0f} samples/s against "
             f"{gpu_rate:.0f} images/s the GPU consumes ({members[0].name}, its fastest variant)."]
    write_section("GPU: paper recipe", "python bench/bench_gpu.py " + " ".join(argv or sys.argv[1:]),
                  "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
