"""Training throughput of the paper's full models at 512 px: images/s for a whole training step.

    python bench/bench_training.py [--size 512] [--batch 4] [--steps 4]

bf16 autocast + channels_last on CPU (fp16 + GradScaler on a GPU when one is present), full model
(ACP + buffering head + E-loss focal + hard sampler), through hpa.training.engine.train_step, so the
number is what train_fold.py achieves per step. On a GPU it also times the bare backbone's
forward + backward at the same batch, the ceiling the full step is compared with.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from results import write_section

from hpa import models
from hpa.config import load_arch_config
from hpa.training.engine import train_step
from hpa.training.losses import build_loss


def images_per_s(fn, batch: int, steps: int, device) -> float:
    times = []
    for i in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def bench_one(arch: str, size: int, batch: int, steps: int, device: torch.device, amp: str) -> str:
    cfg = load_arch_config(arch, channels_last=True, amp=amp, hard_k=0.5)
    model = models.build_model(arch, **cfg.model).to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    loss_fn = build_loss("eloss_focal", np.linspace(10, 12000, 28)).to(device)
    x = torch.rand(batch, 4, size, size)
    y = (torch.rand(batch, 28) < 0.2).float()
    full = images_per_s(lambda: train_step(model, x, y, loss_fn=loss_fn, optimizer=opt, scaler=scaler, cfg=cfg),
                        batch, steps, device)
    cell = f"| {arch} | {size} | {device.type} {amp} channels_last | {full:.2f} |"
    if device.type != "cuda":
        return cell + " n/a (no GPU) | |"
    xd = x.to(device).contiguous(memory_format=torch.channels_last)

    def bare():
        with torch.autocast("cuda", dtype=torch.float16):
            model.encoder(xd).float().mean().backward()

    ceiling = images_per_s(bare, batch, steps, device)
    return cell + f" {ceiling:.1f} | {full / ceiling:.0%} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, nargs="+", default=[512])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4)
    a = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = "fp16" if device.type == "cuda" else "bf16"
    rows = [bench_one(arch, size, a.batch, a.steps, device, amp) for arch in ("resnet50", "se_resnext50")
            for size in a.size]
    body = (f"Full training step (data already in memory), batch {a.batch}, median of {a.steps} steps.\n\n"
            "| arch | px | mode | full step images/s | bare backbone fwd+bwd images/s | full / bare |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(rows))
    write_section(f"training throughput ({device.type})",
                  f"python bench/bench_training.py --size {' '.join(map(str, a.size))} --batch {a.batch}", body)


if __name__ == "__main__":
    main()
