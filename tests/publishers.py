"""Checkpoints in the publishers' ViT key layouts, and a ViT forward pass computed from the
published tensors with torch.nn.functional only, for the weights tests (tests/test_hpa_weights.py,
tests/test_published.py). A tiny ViT (width 192, 12 blocks, 3 heads) stands in for ViT-B/L: the key
structure is the same. Layouts: facebookresearch/dino `vision_transformer.py` (timm's names too)
and Hugging Face ViTModel naming under SubCell's `encoder.` prefix (CellProfiling/SubCellPortable
`vit_model.py`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

WIDTH, DEPTH, HEADS, PATCH = 192, 12, 3, 16


def vit_tensors(chans: int, side: int, layerscale: bool = False, seed: int = 0) -> dict:
    """A ViT's tensors in facebookresearch/dino naming (timm's too)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.05  # noqa: E731
    n = (side // PATCH) ** 2
    sd = {"cls_token": r(1, 1, WIDTH), "pos_embed": r(1, n + 1, WIDTH),
          "patch_embed.proj.weight": r(WIDTH, chans, PATCH, PATCH), "patch_embed.proj.bias": r(WIDTH),
          "norm.weight": 1 + r(WIDTH), "norm.bias": r(WIDTH)}
    for i in range(DEPTH):
        b = f"blocks.{i}."
        sd |= {b + "norm1.weight": 1 + r(WIDTH), b + "norm1.bias": r(WIDTH),
               b + "attn.qkv.weight": r(3 * WIDTH, WIDTH), b + "attn.qkv.bias": r(3 * WIDTH),
               b + "attn.proj.weight": r(WIDTH, WIDTH), b + "attn.proj.bias": r(WIDTH),
               b + "norm2.weight": 1 + r(WIDTH), b + "norm2.bias": r(WIDTH),
               b + "mlp.fc1.weight": r(4 * WIDTH, WIDTH), b + "mlp.fc1.bias": r(4 * WIDTH),
               b + "mlp.fc2.weight": r(WIDTH, 4 * WIDTH), b + "mlp.fc2.bias": r(WIDTH)}
        if layerscale:
            sd |= {b + "ls1.gamma": 1 + r(WIDTH), b + "ls2.gamma": 1 + r(WIDTH)}
    return sd


def hf_checkpoint(sd: dict) -> dict:
    """The same ViT in Hugging Face ViTModel naming under SubCell's `encoder.` prefix, with its pooler."""
    out = {"encoder.embeddings.cls_token": sd["cls_token"], "encoder.embeddings.position_embeddings": sd["pos_embed"],
           "encoder.embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
           "encoder.embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
           "encoder.layernorm.weight": sd["norm.weight"], "encoder.layernorm.bias": sd["norm.bias"],
           "pool_model.attention_v.1.weight": torch.randn(512, WIDTH),
           "pool_model.attention.weight": torch.randn(2, 512)}
    for i in range(DEPTH):
        b, h = f"blocks.{i}.", f"encoder.encoder.layer.{i}."
        q, k, v = sd[b + "attn.qkv.weight"].chunk(3)
        qb, kb, vb = sd[b + "attn.qkv.bias"].chunk(3)
        for name, w, bias in (("query", q, qb), ("key", k, kb), ("value", v, vb)):
            out[h + f"attention.attention.{name}.weight"] = w.clone()
            out[h + f"attention.attention.{name}.bias"] = bias.clone()
        for ours, theirs in (("norm1", "layernorm_before"), ("norm2", "layernorm_after"),
                             ("attn.proj", "attention.output.dense"), ("mlp.fc1", "intermediate.dense"),
                             ("mlp.fc2", "output.dense")):
            for p in ("weight", "bias"):
                out[h + f"{theirs}.{p}"] = sd[b + f"{ours}.{p}"]
    return out


def reference_forward(sd: dict, x: torch.Tensor, eps: float, layerscale: bool) -> torch.Tensor:
    """A pre-norm ViT computed from the published tensors with torch.nn.functional only (no timm)."""
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=PATCH).flatten(2).transpose(1, 2)
    t = torch.cat([sd["cls_token"].expand(len(x), -1, -1), t], 1) + sd["pos_embed"]
    d = WIDTH // HEADS
    for i in range(DEPTH):
        b = f"blocks.{i}."
        h = F.layer_norm(t, (WIDTH,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], eps)
        q, k, v = (h @ sd[b + "attn.qkv.weight"].T + sd[b + "attn.qkv.bias"]).chunk(3, -1)
        q, k, v = (z.reshape(len(x), -1, HEADS, d).transpose(1, 2) for z in (q, k, v))
        a = ((q @ k.transpose(-1, -2)) / d ** 0.5).softmax(-1) @ v
        a = a.transpose(1, 2).reshape(len(x), -1, WIDTH) @ sd[b + "attn.proj.weight"].T + sd[b + "attn.proj.bias"]
        t = t + (a * sd[b + "ls1.gamma"] if layerscale else a)
        h = F.layer_norm(t, (WIDTH,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], eps)
        m = F.gelu(h @ sd[b + "mlp.fc1.weight"].T + sd[b + "mlp.fc1.bias"]) @ sd[b + "mlp.fc2.weight"].T \
            + sd[b + "mlp.fc2.bias"]
        t = t + (m * sd[b + "ls2.gamma"] if layerscale else m)
    return F.layer_norm(t, (WIDTH,), sd["norm.weight"], sd["norm.bias"], eps)
