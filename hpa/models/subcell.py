"""SubCell's classifier (Gupta et al. 2024, bioRxiv 10.1101/2024.12.06.627299) as a toolkit network:
its ViT encoder (timm), its gated-attention pooling of the tokens, and its MLP heads trained with
different seeds, whose probabilities are averaged. The structure follows CellProfiling/SubCellPortable
`vit_model.py` (`GatedAttentionPooler`, `ViTPoolClassifier.make_classifier`): 2 attention heads over
all 768-wide tokens (class token included) give a 1536-wide vector; each head is
1536 -> 512 -> ReLU -> 256 -> ReLU -> 31.
"""

from __future__ import annotations

import torch
from torch import nn

from hpa.models.vit import ViTNet


class GatedAttentionPool(nn.Module):
    """Gated attention pooling (Ilse et al., ICML 2018): per attention head, a softmax over the tokens
    of w . (tanh(V t) * gelu(U t)); the heads' weighted sums of the tokens, concatenated."""

    def __init__(self, dim: int = 768, int_dim: int = 512, heads: int = 2):
        super().__init__()
        self.attention_v = nn.Linear(dim, int_dim)
        self.attention_u = nn.Linear(dim, int_dim)
        self.attention = nn.Linear(int_dim, heads)
        self.out_features = dim * heads

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        gate = torch.tanh(self.attention_v(tokens)) * nn.functional.gelu(self.attention_u(tokens))
        weights = torch.softmax(self.attention(gate).transpose(1, 2), -1)  # (N, heads, tokens)
        return torch.bmm(weights, tokens).flatten(1)


class SeedHeads(nn.Module):
    """k MLP classifiers of one architecture, trained with different seeds; their sigmoid
    probabilities are averaged, as SubCell does. The output is the logit of that mean, so the
    toolkit's sigmoid gives the mean back."""

    def __init__(self, in_features: int, num_classes: int, k: int):
        super().__init__()
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(in_features, 512), nn.ReLU(inplace=True), nn.Linear(512, 256),
                                                nn.ReLU(inplace=True), nn.Linear(256, num_classes)) for _ in range(k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.stack([torch.sigmoid(m(x).float()) for m in self.mlps]).mean(0)
        return torch.logit(p, eps=1e-7)


class SubCellNet(ViTNet):
    """The encoder and input handling of ViTNet (channel order, min-max scaling); the tokens, the
    patch tokens through `grid` (what class activation maps weigh), pooled by gated attention, then
    the seed heads."""

    def __init__(self, encoder: nn.Module, num_classes: int, seeds: int, channels: str, normalize: str = "minmax"):
        super().__init__(encoder, num_classes=num_classes, channels=channels, normalize=normalize)
        self.attn_pool = GatedAttentionPool(encoder.num_features, 512, 2)
        self.head = SeedHeads(self.attn_pool.out_features, num_classes, seeds)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepare(x)
        cls, grid = self.tokens_to_grid(self.encoder.forward_features(x), tuple(x.shape[-2:]))
        grid = self.grid(grid)
        tokens = torch.cat([cls[:, None], grid.flatten(2).transpose(1, 2)], 1)
        return self.attn_pool(tokens)
