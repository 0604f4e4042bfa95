"""Losses that return one value per sample, and the online hard-example sampler.

E-loss (Zhang et al. 2021) weights class c by 1/Q(n_c), the inverse "effective number" of its
n_c training samples, Q(n) = (1 - alpha^n) / (1 - alpha): each new sample of a class overlaps
the feature volume of earlier ones with probability alpha, so large classes count for less
than their raw size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hpa.config import LOSSES


def effective_number_weights(counts: Sequence[float], alpha: float) -> np.ndarray:
    """Per-class weight 1/Q_n = (1 - alpha) / (1 - alpha^n).

    Limits: alpha -> 1 gives 1/n (inverse frequency, used exactly when alpha == 1); alpha = 0
    gives 1 for every class (no re-weighting). A class with n = 0 is treated as n = 1, i.e. it
    gets the largest weight, 1, instead of an infinite one. Weights are not normalised here.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    n = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    if alpha == 1.0:
        return 1.0 / n
    return (1.0 - alpha) / (1.0 - np.power(alpha, n))


class PerSampleLoss(nn.Module):
    """(logits N x C, targets N x C) -> N losses: the mean over classes of w_c * L(p_c, y_c).

    Class weights are normalised to mean 1, so the loss has the scale of the unweighted one and
    the learning rate need not change when E-loss is switched on.
    """

    def __init__(self, kind: str, weights: np.ndarray | None = None, gamma: float = 2.0,
                 alpha: float | None = None):
        super().__init__()
        self.kind, self.gamma, self.alpha = kind, gamma, alpha
        w = None if weights is None else torch.as_tensor(weights / weights.mean(), dtype=torch.float32)
        self.register_buffer("weights", w)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, targets = logits.float(), targets.float()
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        if self.kind == "focal":
            p_t = torch.exp(-bce)  # probability given to the true label
            loss = (1 - p_t) ** self.gamma * bce
            if self.alpha is not None:
                loss = loss * (self.alpha * targets + (1 - self.alpha) * (1 - targets))
        else:
            loss = bce
        if self.weights is not None:
            loss = loss * self.weights
        return loss.mean(1)




def build_loss(name: str, class_counts: Sequence[float] | None = None, alpha_e: float = 0.999,
               gamma: float = 2.0, alpha: float | None = None) -> PerSampleLoss:
    """`bce`, `focal` (gamma, alpha: the focal alpha-balancing, None = off), and the E-loss
    variants `eloss_bce` / `eloss_focal` which need `class_counts` and take `alpha_e`."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    weights = None
    if name.startswith("eloss"):
        if class_counts is None:
            raise ValueError(f"loss {name!r} needs class_counts (the per-class training counts)")
        weights = effective_number_weights(class_counts, alpha_e)
    return PerSampleLoss("focal" if name.endswith("focal") else "bce", weights, gamma, alpha)


def hard_example_loss(per_sample_loss: torch.Tensor, k: int | float | None) -> torch.Tensor:
    """Mean of the k largest per-sample losses of the batch (the paper's hard sampler).

    `k` an int is a count, a float in (0, 1] a fraction of the batch; None keeps all samples.
    Gradients flow only through the kept samples.
    """
    n = per_sample_loss.shape[0]
    if k is None:
        return per_sample_loss.mean()
    if isinstance(k, float):
        if not 0.0 < k <= 1.0:
            raise ValueError(f"hard-example fraction must be in (0, 1], got {k}")
        k = max(1, int(round(k * n)))
    if k < 1:
        raise ValueError(f"hard-example count must be >= 1, got {k}")
    return torch.topk(per_sample_loss, min(k, n)).values.mean()
