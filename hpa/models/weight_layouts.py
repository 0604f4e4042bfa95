"""The published key layouts of HPA-pretrained vision transformers, mapped onto timm's
VisionTransformer strictly: every tensor of the file is either used or belongs to a part the
toolkit does not use (named below: a DINO projection head, SubCell's pooler and classifiers, an
MAE decoder, a mask token), every timm tensor is filled, every shape is equal; anything else is
one line naming the first key at fault.

- `dino`: facebookresearch/dino `vision_transformer.py` (DINO4Cells keeps it): the names timm
  uses too (`patch_embed.proj`, `blocks.<i>.attn.qkv`, `norm`), inside a training checkpoint whose
  `teacher` holds `backbone.*` (the encoder) and `head.*` (the projection head), sometimes under
  `module.` (DistributedDataParallel).
- `hf_vit`: Hugging Face `transformers` ViT naming (SubCell: `encoder.embeddings.*`,
  `encoder.encoder.layer.<i>.attention.attention.{query,key,value}`, ...); query, key and value are
  stacked into timm's `qkv`.
- `dinov2`: facebookresearch/dinov2 (Cell-DINO), as `dino` plus LayerScale (`ls1.gamma`) and, with
  `block_chunks`, blocks stored as `blocks.<chunk>.<i>.*`.

One CNN layout maps onto the toolkit's whole network (encoder and head, `load_published_cnn`):
- `bestfitting`: CellProfiling/densenet `predict/models.py` (`DensenetClass`, the 2018 winner's
  DenseNet121). Its training code saves `{save_dir, state_dict, best_epoch, epoch, best_score}`;
  the state dict holds the torchvision DenseNet as `backbone.features.*` and, because the same
  modules are registered again as stages, every encoder tensor a second time under `conv1.*`,
  `encoder2.*` ... `encoder5.*`; those copies must equal the originals. The head is `bn1`, `fc1`,
  `bn2`, `logit`; torchvision's ImageNet `backbone.classifier` is in the file and unused. His
  requirements pin torchvision 0.2.1, whose dense layers name their parts `norm.1`, `conv.2`, ...
  (torchvision 0.3 renamed them `norm1`, `conv2`, and remaps old files with the same pattern as
  `_OLD_DENSELAYER` below); both namings are read.

Checkpoints are read with `torch.load(weights_only=True)`. A training checkpoint's non-tensor
entries (DINO saves its argparse options) are read as inert placeholders, never constructed.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from hpa.errors import WeightsError

LAYOUTS = ("dino", "hf_vit", "dinov2")
CNN_LAYOUTS = ("bestfitting",)
# parts of a published checkpoint the toolkit does not use: (layout, key prefix, what it is)
UNUSED = {
    "dino": (("head.", "DINO projection head"),),
    "dinov2": (("mask_token", "masked-token embedding of pretraining"), ("dino_head.", "DINO head"),
               ("ibot_head.", "iBOT head")),
    "hf_vit": (("pool_model.", "SubCell gated-attention pooler (read by load_subcell)"),
               ("classifier", "SubCell classifier"),
               ("decoder.", "MAE decoder"), ("encoder.embeddings.mask_token", "mask token"),
               ("encoder.pooler.", "Hugging Face ViT pooler")),
    "bestfitting": (("backbone.classifier.", "torchvision's ImageNet classifier, which the network never calls"),),
}
# bestfitting's stages, registered over the backbone's modules: stage module -> torchvision features module
_BESTFITTING_STAGES = {"conv1.0": "conv0", "conv1.1": "norm0", "encoder2.0": "denseblock1", "encoder3.0": "transition1",
                       "encoder3.1": "denseblock2", "encoder4.0": "transition2", "encoder4.1": "denseblock3",
                       "encoder5.0": "transition3", "encoder5.1": "denseblock4", "encoder5.2": "norm5"}
# his head -> the toolkit's buffering head with an input BatchNorm (hpa.models.heads.buffering_head)
_BESTFITTING_HEAD = {"bn1": "head.0", "fc1": "head.2", "bn2": "head.4", "logit": "head.6"}


class _Opaque:
    """Stands in for any non-tensor object of a checkpoint (options, paths); does nothing."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        pass


def read_checkpoint(path: Path) -> dict:
    """A checkpoint's top-level dict, read with weights_only=True; globals other than tensors are
    read as `_Opaque` placeholders (the unpickler never calls the originals)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        with torch.serialization.safe_globals([(_Opaque, n) for n in names]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: cannot read weights ({type(e).__name__}: {' '.join(str(e).split())[:160]})") \
            from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: not a checkpoint dict (a {type(data).__name__})")
    return data


def encoder_state(data: dict, path: Path) -> dict[str, torch.Tensor]:
    """The weights inside a checkpoint dict: a DINO `teacher`, a `state_dict` or `model` entry, or
    the dict itself; `module.` and `backbone.` prefixes removed."""
    for key in ("teacher", "state_dict", "model"):
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    sd = {}
    for k, v in data.items():
        if not isinstance(v, torch.Tensor):
            raise WeightsError(f"{path}: entry {k!r} is not a tensor; not a state dict of weights")
        k = k.removeprefix("module.")
        sd[k.removeprefix("backbone.")] = v
    return sd


def detect_layout(sd: dict[str, torch.Tensor]) -> str:
    if any(k.endswith("attention.attention.query.weight") for k in sd):
        return "hf_vit"
    if any(".ls1." in k for k in sd) or "mask_token" in sd:
        return "dinov2"
    return "dino"


_HF = [
    (r"encoder\.embeddings\.cls_token", "cls_token"),
    (r"encoder\.embeddings\.position_embeddings", "pos_embed"),
    (r"encoder\.embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"encoder\.encoder\.layer\.(\d+)\.layernorm_before\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (r"encoder\.encoder\.layer\.(\d+)\.layernorm_after\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (r"encoder\.encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"encoder\.encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (r"encoder\.encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (r"encoder\.layernorm\.(weight|bias)", r"norm.\1"),
]
_QKV = re.compile(r"encoder\.encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)")
_CHUNK = re.compile(r"blocks\.\d+\.(\d+)\.(.+)")


def _unused(layout: str, key: str) -> bool:
    return any(key.startswith(p) for p, _ in UNUSED[layout])


def to_timm(sd: dict[str, torch.Tensor], layout: str, path: Path) -> dict[str, torch.Tensor]:
    """The published state dict under timm's names (unused parts left out)."""
    if layout not in LAYOUTS:
        raise WeightsError(f"{path}: unknown weights layout {layout!r}; known: {', '.join(LAYOUTS)}")
    out: dict[str, torch.Tensor] = {}
    if layout == "hf_vit":
        sd = {k if k.startswith(("encoder.", "pool_model.", "classifier", "decoder.")) else f"encoder.{k}": v
              for k, v in sd.items()}
        qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
        for k, v in sd.items():
            if _unused(layout, k):
                continue
            if m := _QKV.fullmatch(k):
                qkv.setdefault((m[1], m[3]), {})[m[2]] = v
                continue
            for pat, rep in _HF:
                if re.fullmatch(pat, k):
                    out[re.sub(pat, rep, k)] = v
                    break
            else:
                raise WeightsError(f"{path}: key {k!r} has no place in a ViT (Hugging Face ViT layout expected)")
        for (i, kind), parts in qkv.items():
            if set(parts) != {"query", "key", "value"}:
                raise WeightsError(f"{path}: layer {i} has attention {kind}s {sorted(parts)}, not query, key and value")
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
        return out
    for k, v in sd.items():
        if _unused(layout, k):
            continue
        if layout == "dinov2" and (m := _CHUNK.fullmatch(k)):
            k = f"blocks.{m[1]}.{m[2]}"  # a chunked block keeps its global index
        out[k] = v
    return out


def _check_fits(mapped: dict[str, torch.Tensor], own: dict[str, torch.Tensor], path: Path, hint: str) -> None:
    """Every mapped tensor has a place in the network, of its shape; otherwise one line naming the
    first that has not (`hint`: what to check)."""
    for k, v in mapped.items():
        if k not in own:
            raise WeightsError(f"{path}: {k!r} does not exist in the network; {hint}")
        if v.shape != own[k].shape:
            raise WeightsError(f"{path}: {k!r} has shape {tuple(v.shape)}, the network expects {tuple(own[k].shape)}")


def load_published(encoder: torch.nn.Module, path: Path, layout: str | None = None) -> str:
    """Fill a timm VisionTransformer from a published checkpoint, strictly; returns the layout used."""
    sd = encoder_state(read_checkpoint(path), Path(path))
    layout = layout or detect_layout(sd)
    mapped = to_timm(sd, layout, Path(path))
    own = encoder.state_dict()
    _check_fits(mapped, own, path, f"from the {layout} layout: is this the right architecture?")
    missing = [k for k in own if k not in mapped]
    if missing:
        raise WeightsError(f"{path}: {len(missing)} model tensor(s) missing from the {layout} file, first "
                           f"{missing[0]!r}")
    encoder.load_state_dict(mapped)
    return layout


_OLD_DENSELAYER = re.compile(r"(.*denselayer\d+\.(?:norm|relu|conv))\.([12])\.(weight|bias|running_mean|running_var|"
                             r"num_batches_tracked)$")


def _bestfitting(sd: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """bestfitting's state dict under the toolkit's names (`encoder.features.*`, `head.*`): each
    stage copy checked equal to its backbone original, the ImageNet classifier left out, any other
    key refused."""
    out: dict[str, torch.Tensor] = {}
    copies: dict[str, tuple[str, torch.Tensor]] = {}
    sd = {_OLD_DENSELAYER.sub(r"\1\2.\3", k): v for k, v in sd.items()}
    for k, v in sd.items():
        if _unused("bestfitting", k):
            continue
        if k.startswith("backbone.features."):
            out["encoder.features." + k.removeprefix("backbone.features.")] = v
            continue
        stage = ".".join(k.split(".")[:2])
        if stage in _BESTFITTING_STAGES:
            copies["encoder.features." + _BESTFITTING_STAGES[stage] + k[len(stage):]] = (k, v)
        elif k.split(".")[0] in _BESTFITTING_HEAD:
            out[_BESTFITTING_HEAD[k.split(".")[0]] + k[len(k.split(".")[0]):]] = v
        else:
            raise WeightsError(f"{path}: key {k!r} has no place in the 2018 winner's DenseNet (CellProfiling/densenet "
                               "layout expected)")
    for target, (k, v) in copies.items():
        original = "backbone.features." + target.removeprefix("encoder.features.")
        if target not in out:
            raise WeightsError(f"{path}: {k!r} is a stage copy of {original!r}, which the file lacks")
        if v.shape != out[target].shape or not torch.equal(v, out[target]):
            raise WeightsError(f"{path}: {k!r} differs from {original!r}, of which it must be a copy; the file is "
                               "inconsistent")
    uncopied = sorted(t for t in out if t.startswith("encoder.features.") and t not in copies)
    if uncopied:
        raise WeightsError(f"{path}: {'backbone.features.' + uncopied[0].removeprefix('encoder.features.')!r} has no "
                           "stage copy (conv1/encoder2-5), as the publisher's network registers every tensor twice; "
                           "not the CellProfiling/densenet layout")
    return out


def load_published_cnn(net: torch.nn.Module, path: Path, layout: str, *, head: bool) -> None:
    """Fill a toolkit network (HPANet) from a published whole-network checkpoint, strictly: the
    encoder always, the head too with `head`. Every tensor of the file is used or named unused,
    every tensor of the network is filled (a BatchNorm's batch counter may be absent), every shape
    is equal; anything else is one line naming the first key at fault."""
    if layout not in CNN_LAYOUTS:
        raise WeightsError(f"{path}: unknown CNN weights layout {layout!r}; known: {', '.join(CNN_LAYOUTS)}")
    data = read_checkpoint(path)
    sd = data.get("state_dict", data)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path}: no state dict of tensors in the file")
    mapped = _bestfitting({k.removeprefix("module."): v for k, v in sd.items()}, Path(path))
    own = net.state_dict()
    _check_fits(mapped, own, path, f"from the {layout} layout: is the network built as the publisher's "
                                   "(model.variant)?")
    wanted = [k for k in own if k.startswith("encoder.") or (head and k.startswith("head."))]
    missing = [k for k in wanted if k not in mapped and not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsError(f"{path}: {len(missing)} network tensor(s) missing from the {layout} file, first "
                           f"{missing[0]!r}")
    net.load_state_dict({k: v for k, v in mapped.items() if k in wanted}, strict=False)


_POOL = re.compile(r"pool_model\.(attention_[vu])\.[01]\.(weight|bias)|pool_model\.(attention)\.(weight|bias)")
_MLP = {"0": "0", "2": "2", "3": "2", "4": "4", "6": "4"}  # SubCellPortable maps its files' 3 -> 2 and 6 -> 4


def load_subcell(net: torch.nn.Module, encoder: Path, heads: list[Path]) -> None:
    """Fill a SubCellNet (hpa.models.subcell) from SubCell's published files, strictly: the encoder
    file's ViT (Hugging Face layout) and its gated-attention pooler (`pool_model.attention_v.<i>`,
    whose Linear sits at index 1 behind a dropout in the published files and at 0 in
    SubCellPortable's own module), and one MLP per classifier file (`0`, `3`, `6`: Linear, ReLU,
    dropout, ..., as trained; `0`, `2`, `4` as SubCellPortable rebuilds them)."""
    sd = encoder_state(read_checkpoint(encoder), Path(encoder))
    own = net.state_dict()
    mapped = {f"encoder.{k}": v for k, v in to_timm(sd, "hf_vit", Path(encoder)).items()}
    for k, v in sd.items():
        if not k.startswith("pool_model."):
            continue
        m = _POOL.fullmatch(k)
        if not m:
            raise WeightsError(f"{encoder}: {k!r} is no part of SubCell's gated-attention pooler (no output projection "
                               "is expected)")
        part, kind = (m[1], m[2]) if m[1] else (m[3], m[4])
        mapped[f"attn_pool.{part}.{kind}"] = v
    if len(heads) != len(net.head.mlps):
        raise WeightsError(f"{encoder}: {len(heads)} classifier files for a network of {len(net.head.mlps)} seeds")
    for i, path in enumerate(heads):
        data = read_checkpoint(path)
        data = data.get("state_dict", data) if isinstance(data.get("state_dict"), dict) else data
        targets = set()
        for k, v in data.items():
            idx, _, kind = k.removeprefix("module.").partition(".")
            target = f"head.mlps.{i}.{_MLP.get(idx)}.{kind}"
            if idx not in _MLP or kind not in ("weight", "bias") or target in targets or not torch.is_tensor(v):
                raise WeightsError(f"{path}: key {k!r} is no part of SubCell's MLP classifier (Linear layers at 0, 3, "
                                   "6)")
            targets.add(target)
            mapped[target] = v
    _check_fits(mapped, own, encoder, "is it SubCell's network for this channel set?")
    missing = [k for k in own if k not in mapped]
    if missing:
        raise WeightsError(f"{encoder}: {len(missing)} network tensor(s) missing from SubCell's files, first "
                           f"{missing[0]!r}")
    net.load_state_dict(mapped)
