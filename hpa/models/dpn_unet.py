"""The HPA's nucleus and cell segmentation network: a U-Net on a Dual Path Network encoder, as
CellProfiling/HPA-Cell-Segmentation publishes it (weights: Zenodo record 4665863, whole pickled
`pytorch_zoo.unet.DPNUnet` models of haoxusci/pytorch_zoo), rebuilt from timm's DPN blocks.

The network: DPN-92's stages (timm `dpn92`, whose block and parameter names are those of the DPN
port pytorch_zoo copies, with a ReLU after the last BatchNorm as pytorch_zoo has it) as five
encoder stages: the stem convolution, then max-pool and the `conv2_*` blocks, `conv3_*`, `conv4_*`,
and `conv5_*` with the closing BatchNorm. The decoder doubles the resolution at each stage (nearest
neighbour, a 3x3 convolution and ReLU), concatenates the encoder's output of that resolution and
merges it with another 3x3 convolution and ReLU; a last doubling and a 3x3 convolution give 3
channels (softmax: background, border, inside). The module names are the publisher's, so its
tensors load with `load_state_dict(strict=True)`; the DPN's widths are read from the file's shapes
(`spec_from_tensors`), so any DPN of that family loads, DPN-92 being the published one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hpa.errors import WeightsError


@dataclass(frozen=True)
class DPNSpec:
    small: bool = False  # DPN-68 style: 3x3 stem, stage widths 64..512 instead of 256..2048
    num_init_features: int = 64
    k_r: int = 96
    groups: int = 32
    k_sec: tuple[int, ...] = (3, 4, 20, 3)
    inc_sec: tuple[int, ...] = (16, 32, 24, 128)


DPN92 = DPNSpec()


class _Up(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(cin, cout, 3, padding=1),
                                   nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class _Merge(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class DPNUNet(nn.Module):
    """The segmentation U-Net; input (N, 3, H, W) normalised as the publisher does, H and W
    multiples of 32; output (N, out_channels, H, W) logits."""

    def __init__(self, spec: DPNSpec = DPN92, out_channels: int = 3) -> None:
        from timm.models.dpn import DPN

        super().__init__()
        enc = DPN(small=spec.small, num_init_features=spec.num_init_features, k_r=spec.k_r, groups=spec.groups,
                  k_sec=spec.k_sec, inc_sec=spec.inc_sec, num_classes=0, fc_act_layer="relu")
        blocks = dict(enc.features.named_children())
        stem = blocks["conv1_1"]

        def stage(i: int) -> list[nn.Module]:
            return [m for k, m in blocks.items() if k.startswith(f"conv{i}_")]

        self.encoder_stages = nn.ModuleList([nn.Sequential(stem.conv, stem.bn),  # the BatchNorm carries the ReLU
                                             nn.Sequential(blocks["conv1_pool"], *stage(2)),
                                             nn.Sequential(*stage(3)), nn.Sequential(*stage(4)),
                                             nn.Sequential(*stage(5))])
        f = [info["num_chs"] for info in enc.feature_info]
        self.filters = f
        self.bottlenecks = nn.ModuleList([_Merge(2 * c, c) for c in reversed(f[:-1])])
        self.decoder_stages = nn.ModuleList([_Up(f[i], f[i - 1]) for i in range(1, len(f))])
        self.last_upsample = _Up(f[0], f[0])
        self.final = nn.Sequential(nn.Conv2d(f[0], out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for s in self.encoder_stages:
            x = s(x)
            skips.append(x)
        for i, merge in enumerate(self.bottlenecks):
            x = self.decoder_stages[-(i + 1)](x)
            x = merge(torch.cat([x, skips[-(i + 2)]], 1))
        return self.final(self.last_upsample(x))


def spec_from_tensors(sd: dict[str, torch.Tensor], path: Path) -> DPNSpec:
    """The DPN widths of a DPNUnet's tensors: stem width and kernel, blocks per stage, the bottleneck
    width k_r, the grouped convolution's groups and each stage's dense increment."""
    try:
        stem = sd["encoder_stages.0.0.weight"]
        small = stem.shape[-1] == 3
        bw_factor = 1 if small else 4
        k_sec, inc_sec = [], []
        for i in range(1, 5):
            ids = {int(k.split(".")[2]) for k in sd if k.startswith(f"encoder_stages.{i}.")}
            first = 1 if i == 1 else 0  # stage 1 starts with the max-pool
            blocks = sorted(j for j in ids if f"encoder_stages.{i}.{j}.c1x1_a.conv.weight" in sd)
            k_sec.append(len(blocks))
            bw = 64 * 2 ** (i - 1) * bw_factor
            inc_sec.append(sd[f"encoder_stages.{i}.{first}.c1x1_c.conv.weight"].shape[0] - bw)
        r = sd["encoder_stages.1.1.c1x1_a.conv.weight"].shape[0]
        groups = r // sd["encoder_stages.1.1.c3x3_b.conv.weight"].shape[1]
    except KeyError as e:
        raise WeightsError(f"{path}: not a DPN U-Net of HPA-Cell-Segmentation's layout (no {e.args[0]})") from None
    return DPNSpec(small=small, num_init_features=stem.shape[0], k_r=r, groups=groups, k_sec=tuple(k_sec),
                   inc_sec=tuple(inc_sec))


def load_dpn_unet(path: Path) -> DPNUNet:
    """The U-Net of a file in the publisher's form (a whole pickled DPNUnet, read by
    hpa.models.pickled_modules without running it), mapped strictly: every tensor used, every
    parameter filled, shapes equal; else one line naming the first key at fault."""
    from hpa.models.pickled_modules import module_tensors

    sd, cls = module_tensors(path)
    spec = spec_from_tensors(sd, path)
    out = sd["final.0.weight"].shape[0] if "final.0.weight" in sd else 3
    net = DPNUNet(spec, out_channels=out)
    own = net.state_dict()
    extra = sorted(set(sd) - set(own))
    missing = sorted(set(own) - set(sd))
    if extra or missing:
        what = f"unexpected tensor {extra[0]}" if extra else f"no tensor for {missing[0]}"
        raise WeightsError(f"{path}: {what} ({cls} does not match HPA-Cell-Segmentation's DPN U-Net)")
    bad = next((k for k in own if own[k].shape != sd[k].shape), None)
    if bad:
        raise WeightsError(f"{path}: {bad} has shape {tuple(sd[bad].shape)}, the network needs {tuple(own[bad].shape)}")
    net.load_state_dict(sd, strict=True)
    return net.eval()
