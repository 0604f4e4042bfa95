"""Learning-rate schedules: cyclic cosine annealing with restarts as a factor function under
torch's `LambdaLR` (so its state, resume and any tooling that expects a torch scheduler work),
and the LR range test, which no library here provides."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from hpa.errors import ConfigError


def cyclic_cosine_factor(step: int, cycle_steps: int, cycles: int, min_lr_ratio: float = 0.01,
                         warmup_steps: int = 0) -> float:
    """LR multiplier at batch `step`: each cycle of `cycle_steps` batches anneals from 1 to
    `min_lr_ratio` along half a cosine, then restarts at 1 (SGDR, Loshchilov & Hutter 2017, as used
    by Zhang et al. 2021); after the last cycle it stays at `min_lr_ratio`. A linear warm-up of
    `warmup_steps` batches comes first."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    step -= warmup_steps
    if step >= cycle_steps * cycles:
        return min_lr_ratio
    t = (step % cycle_steps) / cycle_steps
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def cyclic_cosine(optimizer: Optimizer, cycle_steps: int, cycles: int, min_lr_ratio: float = 0.01,
                  warmup_steps: int = 0) -> LambdaLR:
    """A `LambdaLR` stepped once per batch; every group keeps its own base LR."""
    if cycle_steps < 1 or cycles < 1:
        raise ConfigError(f"schedule: cycle_steps and cycles must be >= 1, got {cycle_steps}, {cycles}")
    return LambdaLR(optimizer, functools.partial(cyclic_cosine_factor, cycle_steps=cycle_steps, cycles=cycles,
                                                 min_lr_ratio=min_lr_ratio, warmup_steps=warmup_steps))


def schedule_shape(epochs: int, cycle_epochs: float | None, cycles: int | None) -> tuple[float, int]:
    """Cycle length and count: a null `cycles` repeats `cycle_epochs` to cover `epochs`; a null
    `cycle_epochs` splits `epochs` into `cycles` equal cycles. So `--epochs` keeps the shape."""
    if cycle_epochs is None and cycles is None:
        raise ConfigError("config: set cycle_epochs, cycles or both")
    if cycle_epochs is None:
        return epochs / cycles, cycles
    if cycles is None:
        return cycle_epochs, max(1, math.ceil(epochs / cycle_epochs))
    return cycle_epochs, cycles


def lr_range_test(step_fn: Callable[[], float], optimizer: Optimizer, start_lr: float = 1e-5, end_lr: float = 10.0,
                  steps: int = 100, smoothing: float = 0.9, diverge: float = 4.0, margin: float = 10.0) -> dict:
    """The LR range test (Smith 2017): the LR grows exponentially from `start_lr` each batch while
    the loss is recorded. `step_fn()` runs one training step at the current LR and returns its loss.

    Rule for the chosen LR: the smoothed loss (exponential moving average, bias-corrected) keeps
    decreasing up to its minimum, the highest LR at which the loss still decreases (the paper's
    criterion). The moving average lags, so at that point the raw loss is already diverging: the
    chosen LR is the minimum's LR divided by `margin` (10, the usual one order of magnitude). The
    test stops early once the smoothed loss exceeds `diverge` x its minimum. Group LRs keep their
    ratios: `start_lr` and the returned LRs refer to the last group (the head).
    """
    ratios = [g["lr"] / optimizer.param_groups[-1]["lr"] for g in optimizer.param_groups]
    factor = (end_lr / start_lr) ** (1 / max(1, steps - 1))
    lrs, raw, smooth = [], [], []
    avg, best = 0.0, math.inf
    for i in range(steps):
        lr = start_lr * factor ** i
        for g, r in zip(optimizer.param_groups, ratios):
            g["lr"] = lr * r
        loss = float(step_fn())
        if not math.isfinite(loss):
            break
        avg = smoothing * avg + (1 - smoothing) * loss
        s = avg / (1 - smoothing ** (i + 1))
        lrs.append(lr)
        raw.append(loss)
        smooth.append(s)
        best = min(best, s)
        if s > diverge * best:
            break
    if not smooth:
        raise FloatingPointError(f"LR range test: the loss was not finite even at lr {start_lr}")
    k = int(min(range(len(smooth)), key=smooth.__getitem__))
    return {"lrs": lrs, "losses": raw, "smoothed": smooth, "min_loss_lr": lrs[k], "chosen_lr": lrs[k] / margin}
