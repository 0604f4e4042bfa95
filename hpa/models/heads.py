"""Pooling and classifier heads: adaptive concat pooling and the paper's "buffering" layers."""

from __future__ import annotations

import torch
from torch import nn


class AdaptiveConcatPool2d(nn.Module):
    """Global average and global max pooling concatenated on channels: [avg, max]."""

    feat_mult = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)


class GlobalAvgPool2d(nn.Module):
    feat_mult = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


class GlobalMaxPool2d(nn.Module):
    feat_mult = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax((2, 3))


def register_input_stats(module: nn.Module, stats: tuple[list[float], list[float]] | None) -> None:
    """Per-channel mean and std a pretrained encoder expects (inputs are in [0, 1]), as buffers that
    are not saved: the run's config (model.normalize) rebuilds them."""
    module.normalize = stats is not None
    if stats:
        module.register_buffer("mean", torch.tensor(stats[0]).view(1, -1, 1, 1), persistent=False)
        module.register_buffer("std", torch.tensor(stats[1]).view(1, -1, 1, 1), persistent=False)


POOLS = {"acp": AdaptiveConcatPool2d, "avg": GlobalAvgPool2d, "max": GlobalMaxPool2d}


def buffering_head(in_features: int, hidden: list[int], dropout: list[float], num_classes: int,
                   input_dropout: float | None = None) -> nn.Sequential:
    """FC layers of decreasing width between the pooled features and the classifier, so the
    features are not squeezed into 28 units at once (Zhang et al. 2021). Each hidden layer is
    Linear -> ReLU -> BatchNorm -> Dropout(p); an empty `hidden` gives a single Linear.
    `input_dropout` p: the pooled features first go through BatchNorm -> Dropout(p), as in the head
    of the 2018 winner's DenseNet (CellProfiling/densenet `DensenetClass`)."""
    if len(hidden) != len(dropout):
        raise ValueError(f"head: {len(hidden)} hidden sizes but {len(dropout)} dropout rates")
    layers: list[nn.Module] = [] if input_dropout is None else [nn.BatchNorm1d(in_features), nn.Dropout(input_dropout)]
    width = in_features
    for h, p in zip(hidden, dropout):
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True), nn.BatchNorm1d(h), nn.Dropout(p)]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
