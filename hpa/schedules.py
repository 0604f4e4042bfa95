"""Learning-rate schedules: cyclic cosine annealing with restarts, stepped per batch."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer


class CyclicCosine:
    """Each cycle of `cycle_steps` batches anneals every group's LR from its base value to
    `min_lr_ratio` x base along half a cosine, then restarts at the base (SGDR, Loshchilov &
    Hutter 2017, as used by Zhang et al. 2021). After the last cycle the LR stays at its minimum.
    """

    def __init__(self, optimizer: Optimizer, cycle_steps: int, cycles: int, min_lr_ratio: float = 0.01,
                 warmup_steps: int = 0):
        if cycle_steps < 1 or cycles < 1:
            raise ValueError(f"cycle_steps and cycles must be >= 1, got {cycle_steps}, {cycles}")
        self.optimizer = optimizer
        self.base = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        for g, b in zip(optimizer.param_groups, self.base):
            g["initial_lr"] = b
        self.cycle_steps, self.cycles, self.min_ratio, self.warmup = cycle_steps, cycles, min_lr_ratio, warmup_steps
        self.step_num = 0
        self._apply()

    def factor(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        step -= self.warmup
        if step >= self.cycle_steps * self.cycles:
            return self.min_ratio
        t = (step % self.cycle_steps) / self.cycle_steps
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    def _apply(self) -> None:
        f = self.factor(self.step_num)
        for g, b in zip(self.optimizer.param_groups, self.base):
            g["lr"] = b * f

    def step(self) -> None:
        self.step_num += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"step_num": self.step_num}

    def load_state_dict(self, state: dict) -> None:
        self.step_num = int(state["step_num"])
        self._apply()


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
