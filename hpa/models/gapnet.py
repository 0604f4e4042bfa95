"""GapNet-PL (Rumetshofer et al., ICLR 2019): a small SELU network whose three stages are each
globally average-pooled and concatenated before a 2 x FC-256 classifier.

Written from the paper's description; `extra_first_stage` adds 3x3 conv blocks to stage one,
as Zhang et al. 2021 did to pass more features to stage two.
"""

from __future__ import annotations

import torch
from torch import nn

from hpa.data.labels import NUM_CLASSES


def _conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.SELU(inplace=True)]


class GapNetPL(nn.Module):
    def __init__(self, in_chans: int = 4, num_classes: int = NUM_CLASSES, extra_first_stage: int = 0,
                 fc: int = 256, dropout: float = 0.3):
        super().__init__()
        s1 = _conv(in_chans, 32, 2)
        for _ in range(extra_first_stage):
            s1 += _conv(32, 32)
        self.stage1 = nn.Sequential(*s1, nn.MaxPool2d(2))
        self.stage2 = nn.Sequential(*_conv(32, 64, 2), *_conv(64, 64), *_conv(64, 64), *_conv(64, 64),
                                    nn.MaxPool2d(2))
        self.stage3 = nn.Sequential(*_conv(64, 128), *_conv(128, 128), *_conv(128, 128))
        self.head = nn.Sequential(
            nn.Linear(32 + 64 + 128, fc), nn.SELU(inplace=True), nn.AlphaDropout(dropout),
            nn.Linear(fc, fc), nn.SELU(inplace=True), nn.AlphaDropout(dropout),
            nn.Linear(fc, num_classes),
        )
        for m in self.modules():  # LeCun normal, the initialisation SELU networks assume
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="linear")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.stage1(x)
        b = self.stage2(a)
        c = self.stage3(b)
        return self.head(torch.cat([a.mean((2, 3)), b.mean((2, 3)), c.mean((2, 3))], 1))

    def cam_layer(self) -> nn.Module:
        """For class activation maps: the last stage (its pooled map feeds the head's largest input)."""
        return self.stage3

    def layer_groups(self, n: int = 2) -> list[list[nn.Parameter]]:
        """[convolutional stages, head] or, with n=3, [stage 1 + 2, stage 3, head]."""
        early = list(self.stage1.parameters()) + list(self.stage2.parameters())
        if n == 2:
            return [early + list(self.stage3.parameters()), list(self.head.parameters())]
        if n == 3:
            return [early, list(self.stage3.parameters()), list(self.head.parameters())]
        raise ValueError(f"layer groups: n must be 2 or 3, got {n}")

    def regularization(self, l1: float, l2: float) -> torch.Tensor:
        """L1 + L2 penalty over the weights (the GapNet-PL paper uses 1e-7 and 1e-5)."""
        ws = [m.weight for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        return l1 * sum(w.abs().sum() for w in ws) + l2 * sum((w * w).sum() for w in ws)
