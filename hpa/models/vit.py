"""Vision transformers under the paper's head: a timm ViT with 4 input channels at any input size
(position embeddings resampled from the grid the weights were trained on, timm's
`dynamic_img_size`), its patch tokens laid out as their grid and pooled as a CNN's feature map is
(adaptive concat pooling), concatenated with the class token, then the buffering layers.

Learning rates follow the ViT fine-tuning convention, layer-wise decay (Clark et al. 2020, as used
by BEiT and MAE): block i of L gets lr x decay^(L + 1 - i), the patch and position embeddings
decay^(L + 1), the final norm and the head the full lr.
"""

from __future__ import annotations

import torch
from torch import nn

from hpa.errors import ConfigError
from hpa.models.heads import AdaptiveConcatPool2d, buffering_head, register_input_stats

STAINS = "rgby"  # the toolkit's channel order: red, green, blue, yellow (Kaggle's)
NORMALIZE = ("none", "imagenet", "self", "minmax")


def check_channels(channels: str) -> None:
    if not channels or len(set(channels)) != len(channels) or set(channels) - set(STAINS):
        raise ConfigError(f"model setting channels {channels!r}: distinct letters of {STAINS!r} in the encoder's "
                          "input order, e.g. rybg")


def self_normalize(x: torch.Tensor) -> torch.Tensor:
    """Each image's channels to zero mean and unit standard deviation (DINO4Cells, Cell-DINO)."""
    mean = x.mean((2, 3), keepdim=True)
    std = x.std((2, 3), unbiased=False, keepdim=True)
    return (x - mean) / (std + 1e-7)


def minmax_normalize(x: torch.Tensor) -> torch.Tensor:
    """Each sample, all its channels together, to [0, 1] (SubCell's min_max_standardize)."""
    lo = x.amin((1, 2, 3), keepdim=True)
    hi = x.amax((1, 2, 3), keepdim=True)
    return (x - lo) / (hi - lo + 1e-6)


class ViTNet(nn.Module):
    def __init__(self, encoder: nn.Module, head_hidden=(), head_dropout=(), num_classes: int = 28,
                 stats: tuple[list[float], list[float]] | None = None, channels: str = STAINS,
                 normalize: str = "none"):
        super().__init__()
        if normalize not in NORMALIZE:
            raise ConfigError(f"model setting normalize {normalize!r}: one of {', '.join(NORMALIZE)}")
        check_channels(channels)
        register_input_stats(self, stats)
        # the stains the encoder reads, in its order, picked from the toolkit's r g b y input
        self.channel_index = None if channels == STAINS else [STAINS.index(c) for c in channels]
        self.per_image = {"self": self_normalize, "minmax": minmax_normalize}.get(normalize)
        self.encoder = encoder
        self.grid = nn.Identity()  # the patch-token map (N, C, h, w): what class activation maps weigh
        self.pool = AdaptiveConcatPool2d()
        width = encoder.num_features
        self.head = buffering_head(width * (self.pool.feat_mult + 1), list(head_hidden), list(head_dropout),
                                   num_classes)

    def tokens_to_grid(self, tokens: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(class token (N, C), patch tokens as a map (N, C, h, w))."""
        n = self.encoder.num_prefix_tokens
        h, w = self.encoder.patch_embed.dynamic_feat_size(hw)
        patches = tokens[:, n:]
        return tokens[:, 0], patches.transpose(1, 2).reshape(tokens.shape[0], patches.shape[-1], h, w)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The toolkit's r g b y input in [0, 1] as the encoder's weights expect it."""
        if self.channel_index is not None:
            x = x[:, self.channel_index]
        if self.per_image is not None:
            x = self.per_image(x.float())
        if self.normalize:
            x = (x - self.mean) / self.std
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The head's input: [avg, max] of the patch-token grid and the class token (N, 3 x width)."""
        x = self.prepare(x)
        cls, grid = self.tokens_to_grid(self.encoder.forward_features(x), tuple(x.shape[-2:]))
        return torch.cat([self.pool(self.grid(grid)), cls], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def cam_layer(self) -> nn.Module:
        return self.grid

    def depth_of(self) -> list[tuple[int, list[nn.Parameter]]]:
        """Every parameter with its depth: 0 the embeddings, i the i-th block, L + 1 the final norm and
        the head (the head's parameters last)."""
        enc, blocks = self.encoder, len(self.encoder.blocks)
        out: dict[int, list[nn.Parameter]] = {}
        for name, p in enc.named_parameters():
            if name.startswith("blocks."):
                d = int(name.split(".")[1]) + 1
            elif name.startswith(("cls_token", "pos_embed", "reg_token", "patch_embed")):
                d = 0
            else:
                d = blocks + 1
            out.setdefault(d, []).append(p)
        out.setdefault(blocks + 1, []).extend(self.head.parameters())
        return sorted(out.items())

    def layer_decay_groups(self, decay: float) -> list[tuple[list[nn.Parameter], float]]:
        """(parameters, LR scale) per depth: decay^(L + 1 - depth)."""
        top = len(self.encoder.blocks) + 1
        return [(params, decay ** (top - d)) for d, params in self.depth_of()]

    def layer_groups(self, n: int = 2) -> list[list[nn.Parameter]]:
        """[encoder, head] or [embeddings + first half of the blocks, the rest, head], as for the CNNs."""
        if n not in (2, 3):
            raise ValueError(f"layer groups: n must be 2 or 3, got {n}")
        head = list(self.head.parameters())
        ids = {id(p) for p in head}
        enc = [p for _, ps in self.depth_of() for p in ps if id(p) not in ids]
        if n == 2:
            return [enc, head]
        half = len(self.encoder.blocks) // 2 + 1
        early = [p for d, ps in self.depth_of() if d < half for p in ps if id(p) not in ids]
        early_ids = {id(p) for p in early}
        return [early, [p for p in enc if id(p) not in early_ids], head]
