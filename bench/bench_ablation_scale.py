"""Small-model CPU training: one run on all cores against one run per core at once (what
`ablate.py --jobs` and the test pipeline do). Trains train_fold.py on the demo dataset.

    python bench/bench_ablation_scale.py [--data-dir data/demo] [--arch resnet10t] [--size 64] [--epochs 3]

Step: forward, backward and AdamW step of a batch of 32 at --size px (crop 3/4 of it), bf16
channels_last, the paper head (ACP + buffering), median of 10 after 2 warm-up steps. Then the
wall time of one run with all threads, of `cores` runs started together with one
thread each, and the throughput ratio (runs per second).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import write_section

ROOT = Path(__file__).resolve().parents[1]


def runs_at_once(n: int, threads: int, a: argparse.Namespace, tmp: Path) -> float:
    cmd = [sys.executable, "train_fold.py", "--data-dir", str(a.data_dir), "--arch", a.arch, "--size", str(a.size),
           "--epochs", str(a.epochs), "--pretrained", "none", "--workers", "0", "--set", f"crop={a.size * 3 // 4}"]
    t = time.perf_counter()
    procs = [subprocess.Popen(cmd + ["--fold", "0", "--runs", str(tmp / f"{n}x{threads}_{k}")], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "OMP_NUM_THREADS": str(threads)}) for k in range(n)]
    if any(p.wait() for p in procs):
        raise SystemExit("error: a training run failed; run train_fold.py with the same flags to see why")
    return time.perf_counter() - t


def step_ms(arch: str, crop: int) -> float:
    import torch

    from hpa import models

    torch.manual_seed(0)
    m = models.build_model(arch, head_hidden=[256], head_dropout=[0.5]).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(m.parameters(), 1e-3)
    x = torch.randn(32, 4, crop, crop).to(memory_format=torch.channels_last)
    y = (torch.rand(32, 28) < 0.1).float()
    times = []
    for k in range(12):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(m(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if k >= 2:
            times.append(time.perf_counter() - t)
    return 1000 * sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=Path("data/demo"))
    ap.add_argument("--arch", default="resnet10t")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args()
    cores = os.cpu_count() or 1
    steps = {arch: step_ms(arch, a.size * 3 // 4) for arch in ("resnet10t", "resnet18", "resnet50")}
    with tempfile.TemporaryDirectory() as tmp:
        one = runs_at_once(1, cores, a, Path(tmp))
        many = runs_at_once(cores, 1, a, Path(tmp))
    rows = "\n".join(f"| {k} | {v:.0f} | {v / steps['resnet10t']:.2f} |" for k, v in steps.items())
    body = (f"Training step, batch 32, {a.size * 3 // 4} px crops:\n\n| arch | ms per step | relative to resnet10t |\n"
            f"|---|---|---|\n{rows}\n\n"
            f"Runs: {a.arch} at {a.size} px, {a.epochs} epochs of one demo fold (train_fold.py, batch 32, bf16).\n\n"
            f"| layout | wall time | runs per minute |\n|---|---|---|\n"
            f"| 1 run x {cores} threads | {one:.1f} s | {60 / one:.2f} |\n"
            f"| {cores} runs x 1 thread, at once | {many:.1f} s | {60 * cores / many:.2f} |\n\n"
            f"Throughput ratio ({cores} x 1 thread over 1 x {cores} threads): **{one * cores / many:.2f}x**.")
    write_section("CPU ablation scale", f"python bench/bench_ablation_scale.py --arch {a.arch} --size {a.size} "
                  f"--epochs {a.epochs}", body)


if __name__ == "__main__":
    main()
