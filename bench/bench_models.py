"""Training-step cost of the paper's full model vs a plain one, and of the CPU precision modes.

    python bench/bench_models.py [--size 256] [--batch 4] [--repeats 5]

1. Full model (ACP + buffering head + E-loss + hard sampler) vs the same backbone with global
   average pooling + one linear layer + BCE: ratio of step times (goal <= 1.05).
2. fp32 NCHW vs bf16 autocast + channels_last, for resnet50 and se_resnext50.
Median over --repeats timed steps after 2 warm-up steps, all in one process.
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


def step_time(model, loss_fn, hard_k, x, y, amp: bool, repeats: int) -> float:
    """Median time of hpa.training.engine.train_step, the step training really runs, after 2 warm-up steps."""
    cfg = load_arch_config("resnet50", channels_last=x.is_contiguous(memory_format=torch.channels_last),
                           amp="bf16" if amp else "off", hard_k=hard_k)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    times = []
    for i in range(repeats + 2):
        t = time.perf_counter()
        train_step(model, x, y, loss_fn=loss_fn, optimizer=opt, scaler=scaler, cfg=cfg)
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.manual_seed(0)
    counts = np.linspace(10, 12000, 28)
    y = (torch.rand(a.batch, 28) < 0.2).float()
    rows_a, rows_b = [], []
    for arch in ("resnet50", "se_resnext50"):
        x = torch.rand(a.batch, 4, a.size, a.size)
        xc = x.contiguous(memory_format=torch.channels_last)
        head = load_arch_config(arch).model
        full = models.build_model(arch, **head).to(memory_format=torch.channels_last)
        plain = models.build_model(arch, pool="avg", head_hidden=[], head_dropout=[]).to(
            memory_format=torch.channels_last)
        t_full = step_time(full, build_loss("eloss_focal", counts), 0.5, xc, y, True, a.repeats)
        t_plain = step_time(plain, build_loss("bce"), None, xc, y, True, a.repeats)
        rows_a.append(f"| {arch} | {t_plain:.3f} | {t_full:.3f} | {t_full / t_plain:.3f} |")
        nchw = models.build_model(arch, **head)
        t32 = step_time(nchw, build_loss("bce"), None, x, y, False, a.repeats)
        t16 = step_time(models.build_model(arch, **head).to(memory_format=torch.channels_last), build_loss("bce"), None,
                        xc, y, True, a.repeats)
        rows_b.append(f"| {arch} | {t32:.3f} | {t16:.3f} | {t32 / t16:.2f}x |")
    body = (f"Training step (forward, backward, SGD step), batch {a.batch}, {a.size} px, 4 channels, median of "
            f"{a.repeats}.\n\n"
            "Full model (ACP + buffering + E-loss focal + hard sampler k=0.5) vs plain (GAP + linear + BCE), "
            "both bf16 channels_last:\n\n| arch | plain s/step | full s/step | full / plain |\n|---|---|---|---|\n"
            + "\n".join(rows_a)
            + "\n\nPrecision and layout (plain BCE loss, same head):\n\n"
              "| arch | fp32 NCHW s/step | bf16 channels_last s/step | speed-up |\n|---|---|---|---|\n"
            + "\n".join(rows_b))
    write_section("models: training step cost", f"python bench/bench_models.py --size {a.size} --batch {a.batch} "
                  f"--repeats {a.repeats}", body)


if __name__ == "__main__":
    main()
