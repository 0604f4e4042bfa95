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


# ---- CellProfiling/HPA-Cell-Segmentation's networks ------------------------------------------------------
# Its Zenodo files (record 4665863) are whole models pickled with torch.save(model): a
# `pytorch_zoo.unet.DPNUnet` of haoxusci/pytorch_zoo (`unet.py`, `abstract_model.py` DPEncoderDecoder,
# `dpn.py`, the DPN port by R. Wightman that passes (residual, dense) tuples between blocks). The classes
# below have the same module paths, class names, attribute names and forward arithmetic, written for
# the tests; `zoo_dpn_unet` registers them under `pytorch_zoo.*` while the test saves its file, and
# the toolkit reads it with those modules gone.
def zoo_modules():
    import sys
    import types

    from torch import nn

    class BnActConv2d(nn.Module):
        def __init__(self, cin, cout, k, stride, padding=0, groups=1):
            super().__init__()
            self.bn = nn.BatchNorm2d(cin, eps=0.001)
            self.act = nn.ReLU(inplace=True)
            self.conv = nn.Conv2d(cin, cout, k, stride, padding, groups=groups, bias=False)

        def forward(self, x):
            return self.conv(self.act(self.bn(x)))

    class CatBnAct(nn.Module):
        def __init__(self, cin):
            super().__init__()
            self.bn = nn.BatchNorm2d(cin, eps=0.001)
            self.act = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.act(self.bn(torch.cat(x, 1) if isinstance(x, tuple) else x))

    class InputBlock(nn.Module):
        def __init__(self, nf, k, pad):
            super().__init__()
            self.conv = nn.Conv2d(3, nf, k, stride=2, padding=pad, bias=False)
            self.bn = nn.BatchNorm2d(nf, eps=0.001)
            self.act = nn.ReLU(inplace=True)
            self.pool = nn.MaxPool2d(3, 2, 1)

    class DualPathBlock(nn.Module):
        def __init__(self, cin, a, b, c, inc, groups, kind):
            super().__init__()
            self.num_1x1_c, self.kind = c, kind
            if kind == "down":
                self.c1x1_w_s2 = BnActConv2d(cin, c + 2 * inc, 1, 2)
            elif kind == "proj":
                self.c1x1_w_s1 = BnActConv2d(cin, c + 2 * inc, 1, 1)
            self.c1x1_a = BnActConv2d(cin, a, 1, 1)
            self.c3x3_b = BnActConv2d(a, b, 3, 2 if kind == "down" else 1, 1, groups)
            self.c1x1_c = BnActConv2d(b, c + inc, 1, 1)

        def forward(self, x):
            x_in = torch.cat(x, 1) if isinstance(x, tuple) else x
            if self.kind == "normal":
                s1, s2 = x
            else:
                s = (self.c1x1_w_s2 if self.kind == "down" else self.c1x1_w_s1)(x_in)
                s1, s2 = s[:, :self.num_1x1_c], s[:, self.num_1x1_c:]
            y = self.c1x1_c(self.c3x3_b(self.c1x1_a(x_in)))
            return s1 + y[:, :self.num_1x1_c], torch.cat([s2, y[:, self.num_1x1_c:]], 1)

    class DPN(nn.Module):
        def __init__(self, small, nf, k_r, groups, k_sec, inc_sec):
            super().__init__()
            from collections import OrderedDict

            bwf = 1 if small else 4
            self.blocks = OrderedDict()
            self.blocks["conv1_1"] = InputBlock(nf, 3 if small else 7, 1 if small else 3)
            cin = nf
            for i, (n, inc) in enumerate(zip(k_sec, inc_sec)):
                bw, r = 64 * 2 ** i * bwf, k_r * 2 ** i
                self.blocks[f"conv{i + 2}_1"] = DualPathBlock(cin, r, r, bw, inc, groups, "proj" if i == 0 else "down")
                cin = bw + 3 * inc
                for j in range(2, n + 1):
                    self.blocks[f"conv{i + 2}_{j}"] = DualPathBlock(cin, r, r, bw, inc, groups, "normal")
                    cin += inc
            self.blocks["conv5_bn_ac"] = CatBnAct(cin)

    class ConvBottleneck(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.seq = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True))

        def forward(self, dec, enc):
            return self.seq(torch.cat([dec, enc], 1))

    class UnetDecoderBlock(nn.Module):
        def __init__(self, cin, mid, cout):
            super().__init__()
            self.layer = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(cin, cout, 3, padding=1),
                                       nn.ReLU(inplace=True))

        def forward(self, x):
            return self.layer(x)

    class DPNUnet(nn.Module):
        def __init__(self, spec, target_channel_num=3):
            super().__init__()
            enc = DPN(spec["small"], spec["nf"], spec["k_r"], spec["groups"], spec["k_sec"], spec["inc_sec"])
            b = enc.blocks
            bwf = 1 if spec["small"] else 4  # each stage's output: its width and the dense increments
            f = [spec["nf"]] + [64 * 2 ** i * bwf + (n + 2) * inc
                                for i, (n, inc) in enumerate(zip(spec["k_sec"], spec["inc_sec"]))]
            self.filters = f
            self.bottlenecks = nn.ModuleList([ConvBottleneck(c * 2, c) for c in reversed(f[:-1])])
            self.decoder_stages = nn.ModuleList([UnetDecoderBlock(f[i], f[i], f[i - 1]) for i in range(1, 5)])
            self.last_upsample = UnetDecoderBlock(f[0], f[0], f[0])
            self.final = nn.Sequential(nn.Conv2d(f[0], target_channel_num, 3, padding=1))
            stem = b["conv1_1"]
            self.encoder_stages = nn.ModuleList([
                nn.Sequential(stem.conv, stem.bn, stem.act),
                nn.Sequential(stem.pool, *[m for k, m in b.items() if k.startswith("conv2_")]),
                nn.Sequential(*[m for k, m in b.items() if k.startswith("conv3_")]),
                nn.Sequential(*[m for k, m in b.items() if k.startswith("conv4_")]),
                nn.Sequential(*[m for k, m in b.items() if k.startswith("conv5_")])])

        def forward(self, x):
            enc = []
            for stage in self.encoder_stages:
                x = stage(x)
                enc.append(torch.cat(x, 1) if isinstance(x, tuple) else x.clone())
            for i, neck in enumerate(self.bottlenecks):
                x = self.decoder_stages[-(i + 1)](x)
                x = neck(x, enc[-(i + 2)])
            return self.final(self.last_upsample(x))

    names = {"pytorch_zoo.dpn": (BnActConv2d, CatBnAct, InputBlock, DualPathBlock, DPN),
             "pytorch_zoo.abstract_model": (ConvBottleneck, UnetDecoderBlock), "pytorch_zoo.unet": (DPNUnet,)}
    pkg = types.ModuleType("pytorch_zoo")
    mods = {"pytorch_zoo": pkg}
    for mod_name, classes in names.items():
        m = types.ModuleType(mod_name)
        for c in classes:
            c.__module__, c.__qualname__ = mod_name, c.__name__
            setattr(m, c.__name__, c)
        setattr(pkg, mod_name.split(".")[1], m)
        mods[mod_name] = m
    return mods, DPNUnet, sys


# a DPN of the same family at test size (DPN-92 is small=False, 64, 96, 32, (3, 4, 20, 3), (16, 32, 24, 128))
TINY_DPN = {"small": True, "nf": 8, "k_r": 8, "groups": 4, "k_sec": (1, 2, 1, 1), "inc_sec": (4, 4, 4, 4)}


def zoo_dpn_unet(path, *, seed: int = 0, legacy: bool = False, data_parallel: bool = False, edit=None):
    """A DPNUnet of TINY_DPN with random weights (BatchNorm statistics too), saved whole as the
    publisher saves it (zip format, or the pre-1.6 format with `legacy`); returns the network, which
    the caller may still run."""
    from torch import nn

    mods, DPNUnet, sys = zoo_modules()
    sys.modules.update(mods)
    try:
        torch.manual_seed(seed)
        net = DPNUnet(TINY_DPN)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.normal_(0, 0.1)
        net.eval()
        if edit:
            edit(net)
        saved = nn.DataParallel(net) if data_parallel else net
        import warnings

        with warnings.catch_warnings():  # the old format cannot keep the source of classes made in a function
            warnings.simplefilter("ignore")
            torch.save(saved, path, _use_new_zipfile_serialization=not legacy)
    finally:
        for k in mods:
            sys.modules.pop(k, None)
    return net
