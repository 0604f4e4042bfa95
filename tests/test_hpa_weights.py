"""Named HPA weights: checkpoints built here in each publisher's key layout, served from a server on
127.0.0.1 as Zenodo (record API with md5) and S3 (ETag) serve them, mapped strictly onto timm's ViT,
and checked against an independent forward pass of the published layout. The server is
tests/weights_server.py (the `server` fixture).

Key names and shapes follow the publishers' model code (read with the search tool):
- facebookresearch/dino `vision_transformer.py` and `main_dino.py`: a training checkpoint with
  `teacher` = {`backbone.<ViT>`, `head.<DINOHead>`}, `student` under `module.`, and `args`
  (an argparse.Namespace); DINO4Cells (broadinstitute/DINO4Cells_code) keeps this layout.
- CellProfiling/SubCellPortable `vit_model.py` (`ViTPoolClassifier.load_model_dict`): one flat
  dict of `encoder.<HF ViTModel>` and `pool_model.<GatedAttentionPooler>` tensors.
- facebookresearch/dinov2 `hub/cell_dino/backbones.py` (`cell_dino_hpa_vitl16`: block_chunks=4,
  init_values=1.0): `blocks.<chunk>.<i>.ls1.gamma`, `mask_token`.
A tiny ViT (width 192, 12 blocks, 3 heads) stands in for ViT-B/L: the key structure is the same.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch
from publishers import DEPTH, WIDTH, hf_checkpoint, reference_forward, vit_tensors

from hpa.config import load_arch_config
from hpa.errors import WeightsError
from hpa.models import build_model, hpa_weights
from hpa.models.weight_layouts import load_published


def dino_checkpoint(sd: dict) -> dict:
    head = {"head.mlp.0.weight": torch.randn(64, WIDTH), "head.last_layer.weight_g": torch.ones(1, 1)}
    return {"teacher": {**{f"backbone.{k}": v for k, v in sd.items()}, **head},
            "student": {f"module.backbone.{k}": v + 1 for k, v in sd.items()},
            "args": argparse.Namespace(arch="vit_base", patch_size=16, lr=5e-4), "epoch": 100}


def dinov2_chunked(sd: dict, chunks: int = 4) -> dict:
    per = DEPTH // chunks
    out = {"mask_token": torch.zeros(1, WIDTH)}
    for k, v in sd.items():
        if k.startswith("blocks."):
            i = int(k.split(".")[1])
            k = f"blocks.{i // per}.{k.removeprefix('blocks.')}"
        out[k] = v
    return out


def tiny(name: str, monkeypatch) -> hpa_weights.WeightSource:
    """The named source, on the tiny ViT (same layout, smaller width)."""
    arch = "vit_tiny16"
    w = dataclasses.replace(hpa_weights.SOURCES[name], arch=arch)
    monkeypatch.setitem(hpa_weights.SOURCES, name, w)
    return w


def save(obj, path: Path) -> bytes:
    torch.save(obj, path)
    return path.read_bytes()


def zenodo_record(srv, base, record: str, key: str, data: bytes, md5: str | None = None) -> None:
    srv.files[f"/api/records/{record}/files/{key}/content"] = data
    srv.api[f"/api/records/{record}"] = {
        "metadata": {"license": {"id": "cc-by-4.0"}},
        "files": [{"key": "features.pth.csv", "size": 3, "checksum": "md5:0", "links": {"self": f"{base}/x"}},
                  {"key": key, "size": len(data), "checksum": f"md5:{md5 or hashlib.md5(data).hexdigest()}",
                   "links": {"self": f"{base}/api/records/{record}/files/{key}/content"}}]}


def test_dino4cells_from_zenodo_maps_strictly_and_matches_the_reference(server, tmp_path, monkeypatch):
    srv, base = server
    tiny("dino4cells-hpa-fov", monkeypatch)
    sd = vit_tensors(4, 224)
    zenodo_record(srv, base, "8061392", "DINO_FOV_checkpoint.pth", save(dino_checkpoint(sd), tmp_path / "c.pth"))
    cfg = load_arch_config("vit_tiny16", pretrained="dino4cells-hpa-fov")
    assert cfg.model | {} == {**cfg.model, "normalize": "self", "channels": "rgby", "img_size": 224}
    net = build_model("vit_tiny16", pretrained=cfg.pretrained, **cfg.model).eval()
    x = torch.rand(2, 4, 224, 224)
    with torch.no_grad():
        ours = net.encoder.forward_features(net.prepare(x))
        ref = reference_forward(sd, (x - x.mean((2, 3), keepdim=True)) / x.std((2, 3), unbiased=False, keepdim=True),
                                1e-6, False)
    assert torch.allclose(ours, ref, atol=1e-4), (ours - ref).abs().max()
    cached = hpa_weights.cached_path(hpa_weights.source("dino4cells-hpa-fov"))
    side = json.loads(cached.with_name(cached.name + ".json").read_text())
    assert side["verified"] == "size and md5" and side["licence"] == "cc-by-4.0"
    n = len(srv.requests)
    build_model("vit_tiny16", pretrained=cfg.pretrained, **cfg.model)  # once downloaded, from the cache
    assert len(srv.requests) == n


def test_subcell_hf_layout_channel_order_and_resume(server, tmp_path, monkeypatch):
    """rybg weights whose patch embedding reads only their 4th input (g, the protein) respond only to
    the toolkit's green channel; a cut download resumes with a Range request."""
    srv, base = server
    tiny("subcell-rybg-vit", monkeypatch)
    sd = vit_tensors(4, 448, seed=1)
    sd["patch_embed.proj.weight"][:, :3] = 0  # rybg: only channel 3, the protein, is read
    data = save(hf_checkpoint(sd), tmp_path / "s.pth")
    key = "/models/all_channels_ViT-ProtS-Pool.pth"
    srv.files[key] = data
    w = hpa_weights.source("subcell-rybg-vit")
    part = hpa_weights.cached_path(w).with_name(hpa_weights.cached_path(w).name + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:1000])  # an interrupted download
    cfg = load_arch_config("vit_tiny16", pretrained="subcell-rybg-vit")
    net = build_model("vit_tiny16", pretrained=cfg.pretrained, **cfg.model).eval()
    assert ("GET", key, "bytes=1000-") in srv.requests
    x = torch.rand(1, 4, 448, 448)
    x[:, 1, 0, 0], x[:, 1, 0, 1] = 0.0, 1.0  # the sample's min and max sit in green: min-max scaling is fixed
    with torch.no_grad():
        ref = reference_forward(sd, x[:, [0, 3, 2, 1]], 1e-12, False)
        out = net.encoder.forward_features(net.prepare(x))
        assert torch.allclose(out, ref, atol=1e-4), (out - ref).abs().max()
        base_out = net(x)
        for c in (0, 2, 3):  # red, blue, yellow
            y = x.clone()
            y[:, c] = torch.rand(448, 448)
            assert torch.allclose(net(y), base_out, atol=1e-5), c
        y = x.clone()
        y[:, 1, 1:] = torch.rand(447, 448)
        assert not torch.allclose(net(y), base_out, atol=1e-3)


def test_cell_dino_needs_the_licence_and_maps_chunked_layerscale_blocks(tmp_path, monkeypatch):
    monkeypatch.setenv("HPA_WEIGHTS_CACHE", str(tmp_path))
    tiny("cell-dino-hpa", monkeypatch)
    with pytest.raises(Exception, match="Noncommercial.*--accept-licence"):
        load_arch_config("vit_tiny16", pretrained="cell-dino-hpa")
    cfg = load_arch_config("vit_tiny16", pretrained="cell-dino-hpa", accept_licence=True)
    with pytest.raises(WeightsError, match="not public.*put the file at"):
        build_model("vit_tiny16", pretrained=cfg.pretrained, **cfg.model)
    sd = vit_tensors(4, 224, layerscale=True, seed=2)
    dest = hpa_weights.cached_path(hpa_weights.source("cell-dino-hpa"))
    dest.parent.mkdir(parents=True)
    torch.save(dinov2_chunked(sd), dest)  # placed by hand, as the offline message says
    net = build_model("vit_tiny16", pretrained=cfg.pretrained, **cfg.model).eval()
    x = torch.rand(2, 4, 224, 224)
    with torch.no_grad():
        ref = reference_forward(sd, (x - x.mean((2, 3), keepdim=True)) / x.std((2, 3), unbiased=False, keepdim=True),
                                1e-6, True)
        assert torch.allclose(net.encoder.forward_features(net.prepare(x)), ref, atol=1e-4)


def test_offline_names_the_address_and_the_cache_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HPA_WEIGHTS_CACHE", str(tmp_path))
    with pytest.raises(WeightsError) as e:
        hpa_weights.fetch("subcell-bg-mae")
    msg = str(e.value)
    assert "\n" not in msg and "HF_HUB_OFFLINE" in msg
    assert "czi-subcell-public.s3.amazonaws.com/models/DNA-Protein_MAE-CellS-ProtS-Pool.pth" in msg
    assert str(tmp_path / "subcell-bg-mae" / "DNA-Protein_MAE-CellS-ProtS-Pool.pth") in msg


def test_a_corrupt_download_is_refused_by_the_publishers_md5(server, tmp_path, monkeypatch):
    srv, base = server
    tiny("dino4cells-hpa-cell", monkeypatch)
    zenodo_record(srv, base, "8061426", "DINO_cell.pth", save(dino_checkpoint(vit_tensors(4, 224)), tmp_path / "c"),
                  md5="0" * 32)
    with pytest.raises(WeightsError, match="md5 .* differs from the publisher's"):
        hpa_weights.fetch("dino4cells-hpa-cell")
    assert not hpa_weights.cached_path(hpa_weights.source("dino4cells-hpa-cell")).exists()


def test_strict_mapping_names_the_first_mismatch(tmp_path):
    enc = build_model("vit_tiny16", pretrained="none").encoder
    sd = vit_tensors(4, 224)
    bad = dict(sd, **{"blocks.3.attn.qkv.weight": torch.zeros(10, WIDTH)})
    torch.save(bad, tmp_path / "a.pth")
    with pytest.raises(WeightsError, match=r"'blocks.3.attn.qkv.weight' has shape \(10, 192\)"):
        load_published(enc, tmp_path / "a.pth")
    torch.save({k: v for k, v in sd.items() if k != "norm.bias"}, tmp_path / "b.pth")
    with pytest.raises(WeightsError, match="1 model tensor.*missing.*'norm.bias'"):
        load_published(enc, tmp_path / "b.pth")
    torch.save({**sd, "blocks.0.extra.weight": torch.zeros(1)}, tmp_path / "c.pth")
    with pytest.raises(WeightsError, match="'blocks.0.extra.weight'.*does not exist"):
        load_published(enc, tmp_path / "c.pth")
    hf = hf_checkpoint(sd)
    del hf["encoder.encoder.layer.2.attention.attention.key.bias"]
    torch.save(hf, tmp_path / "d.pth")
    with pytest.raises(WeightsError, match="layer 2 has attention biass"):
        load_published(enc, tmp_path / "d.pth")


def test_pretrained_file_detects_the_layout(tmp_path):
    """--pretrained FILE: a copy fetched by hand, in any of the three layouts."""
    sd = vit_tensors(4, 224, seed=5)
    for name, ck in (("dino.pth", dino_checkpoint(sd)), ("hf.pth", hf_checkpoint(sd))):
        torch.save(ck, tmp_path / name)
        net = build_model("vit_tiny16", pretrained=str(tmp_path / name))
        assert torch.equal(net.encoder.blocks[7].attn.qkv.weight, sd["blocks.7.attn.qkv.weight"]), name
