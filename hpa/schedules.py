"""Learning-rate schedules: cyclic cosine annealing with restarts, stepped per batch."""

from __future__ import annotations

import math

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
