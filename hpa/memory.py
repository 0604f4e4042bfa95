"""Micro-batches that fit the device: a short probe of the real model, dtype and crop side.

The paper's batches (80 SE-ResNeXt50 crops of 768 px) need far more memory than one GPU has, so a
step runs as micro-batches whose gradients accumulate (hpa.training.train_step). With
`micro_batch: auto`, each stored side of the training set gets the largest micro-batch whose
forward and backward pass fit, found by doubling then bisection over real steps on random input,
then shrunk by HEADROOM for the fragmentation and the optimizer state a real step adds. The model's
weights, BatchNorm statistics and every random generator are restored afterwards, so probing does
not change what the run learns.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch

from hpa import distributed
from hpa.config import TrainConfig
from hpa.dataset import crop_side
from hpa.errors import RunError
from hpa.labels import NUM_CLASSES
from hpa.runtime import autocast

HEADROOM = 0.85  # of the largest micro-batch that fitted in the probe


def can_probe(device: torch.device) -> bool:
    """Only a GPU has a memory limit worth probing; on the CPU a step takes the whole share."""
    return device.type == "cuda"


def largest_fitting(fits: Callable[[int], bool], limit: int) -> int:
    """The largest m in 1..limit with fits(m), for a fits that holds up to some m and fails above it:
    doubling from 1, then bisection (about 2 log2(limit) probes). 0 when not even 1 fits."""
    if fits(limit):
        return limit
    lo, hi, m = 0, limit, 1
    while m < hi:
        if not fits(m):
            hi = m
            break
        lo, m = m, m * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def probe_step(model: torch.nn.Module, loss_fn: torch.nn.Module, cfg: TrainConfig, device: torch.device, m: int,
               side: int) -> None:
    """One forward and backward pass of `m` random crops of `side` px (raises torch.OutOfMemoryError)."""
    x = torch.rand(m, 4, side, side, device=device)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, cfg.amp):
        logits = model(x)
    loss_fn(logits.float(), torch.zeros(m, NUM_CLASSES, device=device)).mean().backward()
    model.zero_grad(set_to_none=True)


def peak_memory(device: torch.device) -> int:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0


def fits(model, loss_fn, cfg: TrainConfig, device: torch.device, side: int) -> Callable[[int], bool]:
    def attempt(m: int) -> bool:
        try:
            probe_step(model, loss_fn, cfg, device, m, side)
            return True
        except torch.OutOfMemoryError:
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            return False
    return attempt


def micro_batches(model: torch.nn.Module, loss_fn: torch.nn.Module, cfg: TrainConfig, device: torch.device,
                  sides: list[int], share: int) -> dict[int, int]:
    """Stored side -> micro-batch for `micro_batch: auto` (the whole per-process `share` where the
    device is not probed). Every process of a DDP run gets the smallest of the ranks' choices, so
    all accumulate the same number of micro-batches."""
    if not can_probe(device):
        return {s: share for s in sides}
    state = copy.deepcopy(model.state_dict())
    out = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model.train()
        for side in sorted(sides):
            crop = crop_side(side, cfg.size, cfg.crop, cfg.crop_large) or side
            best = largest_fitting(fits(model, loss_fn, cfg, device, crop), share)
            if best == 0:
                raise RunError(f"[{cfg.arch}_{cfg.size}] not even one {crop} px crop (stored side {side}) fits in "
                               f"device memory; use a smaller crop or size, or --amp bf16")
            out[side] = best if best == share else max(1, math.floor(best * HEADROOM))
    model.load_state_dict(state)
    mins = distributed.gather(out)
    return {s: min(r[s] for r in mins) for s in out}


def describe(micro: dict[int, int], share: int, cfg: TrainConfig) -> str:
    """'side 768 (crop 512): 20 x 4' for the log: micro-batch x micro-batches per step."""
    return "; ".join(f"side {s} (crop {crop_side(s, cfg.size, cfg.crop, cfg.crop_large) or s}): "
                     f"{m} x {math.ceil(share / m)}" for s, m in sorted(micro.items()))
