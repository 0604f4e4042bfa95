"""The checkpoints of an improving epoch: best.pt and last.pt written as two files (before) against
best.pt written and last.pt made a hard link to it (now), for real paper models' training state
(weights, SGD momentum, the rest of the checkpoint dict), on this machine's disk; and one file
serialised into memory first, then written (before), against straight into its file (now).

    python bench/bench_checkpoint.py [--archs resnet50 resnet101] [--repeats 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from results import write_section

from hpa.config import load_arch_config
from hpa.core.atomic import atomic_hard_link, atomic_write_bytes
from hpa.core.checkpoint import save_checkpoint
from hpa.models import build_model


def training_state(arch: str) -> dict:
    model = build_model(arch, **load_arch_config(arch).model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for p in model.parameters():  # one step's momentum buffers, as a real checkpoint holds
        p.grad = torch.zeros_like(p)
    opt.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "config": {}, "epoch": 1}


def serialised(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=["resnet50", "resnet101"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", type=Path, help="where to write (default: a temporary directory)")
    a = ap.parse_args()
    rows, one = [], []
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        best, last = Path(d) / "best.pt", Path(d) / "last.pt"
        for arch in a.archs:
            state = training_state(arch)
            two = timed(lambda s=state: (save_checkpoint(best, s), save_checkpoint(last, s)), a.repeats)
            size = best.stat().st_size / 2**20
            linked = timed(lambda s=state: (save_checkpoint(best, s), atomic_hard_link(best, last)), a.repeats)
            rows.append(f"| {arch} | {size:.0f} MiB | {two:.2f} | {linked:.2f} | {two / linked:.2f}x |")
            before = timed(lambda s=state: atomic_write_bytes(best, serialised(s)), a.repeats)
            now = timed(lambda s=state: save_checkpoint(best, s), a.repeats)
            one.append(f"| {arch} | {size:.0f} MiB | {before:.2f} | {now:.2f} | {before / now:.2f}x |")
    body = ("An improving epoch's checkpoints, median of "
            f"{a.repeats}: each file serialised straight into a temporary file, fsync'd and renamed into place.\n\n"
            "| arch | checkpoint | two writes (s) | write + hard link (s) | speed-up |\n|---|---|---|---|---|\n"
            + "\n".join(rows)
            + "\n\nOne checkpoint, serialised into memory first and then written (as before), against straight "
            "into its temporary file (now, no second copy of the state in memory):\n\n"
            "| arch | checkpoint | via memory (s) | straight (s) | speed-up |\n|---|---|---|---|---|\n"
            + "\n".join(one))
    write_section("checkpoint: best.pt and last.pt of an improving epoch",
                  " ".join(["python bench/bench_checkpoint.py", *sys.argv[1:]]), body)


if __name__ == "__main__":
    main()
