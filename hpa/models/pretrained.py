"""Pretrained 3-channel weights into a 4-channel network: from a local file, or the arch's timm
ImageNet weights from the standard caches (Hugging Face hub cache for weights published there,
torch hub cache for those timm still fetches by URL), downloaded once when the machine is online.

The first convolution is adapted with timm's `adapt_input_conv`: the RGB kernels are repeated
cyclically over the 4 input channels (R, G, B, R) and scaled by 3/4, so the 4th (yellow, ER)
channel starts as 0.75 x the red kernel and the layer's response to an input of the same mean
intensity is unchanged. Classifier weights in the file (fc, last_linear, classifier, head) are
ignored: the network's own head is trained from scratch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import torch
from torch import nn

from hpa.errors import WeightsError

log = logging.getLogger(__name__)
_CLASSIFIER_PREFIXES = ("fc.", "last_linear.", "classifier.", "head.fc.", "head.")



def load_pretrained(model: nn.Module, path: Path) -> None:
    from timm.models import adapt_input_conv

    from hpa.models.weight_layouts import encoder_state, read_checkpoint

    sd = encoder_state(read_checkpoint(path), Path(path))
    own = model.state_dict()
    out = {}
    for k, v in sd.items():
        if k not in own:
            if k.startswith(_CLASSIFIER_PREFIXES):
                continue
            raise WeightsError(f"{path}: key {k!r} does not exist in the model "
                               f"({type(model).__name__}); is this the right architecture?")
        if v.ndim == 4 and own[k].ndim == 4 and v.shape[1] != own[k].shape[1]:
            v = adapt_input_conv(own[k].shape[1], v)
        if v.shape != own[k].shape:
            raise WeightsError(f"{path}: {k!r} has shape {tuple(v.shape)}, model expects {tuple(own[k].shape)}")
        out[k] = v
    missing = [k for k in own if k not in out and not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsError(f"{path}: {len(missing)} model weights missing from the file, e.g. {missing[:3]}")
    model.load_state_dict(out, strict=False)
    log.info("loaded pretrained weights from %s (%d tensors)", path, len(out))


def offline() -> bool:
    """HF_HUB_OFFLINE set: no download is attempted (the tests and CI set it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def imagenet_weights(timm_name: str) -> Path:
    """The local file of timm's default ImageNet weights for `timm_name`: from the cache, or
    downloaded into it when online. Offline without it: a WeightsError that says how to get it."""
    import timm

    cfg = timm.models.get_pretrained_cfg(timm_name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise WeightsError(f"--pretrained imagenet: timm has no ImageNet weights for {timm_name}; use --pretrained "
                           "none or a weights file")
    if cfg.hf_hub_id:
        from huggingface_hub import constants, hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        reason = "not found"
        for filename in ("model.safetensors", "pytorch_model.bin"):
            try:
                return Path(hf_hub_download(cfg.hf_hub_id, filename))
            except EntryNotFoundError as e:  # this file is not in the repo or not cached; try the other
                reason = type(e).__name__
            except Exception as e:  # no network, offline mode, a server error: say how to get the file
                reason = f"{type(e).__name__}: {' '.join(str(e).split())[:120]}"
        raise WeightsError(
            f"--pretrained imagenet: the weights of {timm_name} ({cfg.hf_hub_id}) are not in the Hugging Face cache "
            f"{constants.HF_HUB_CACHE} and could not be downloaded ({reason}); on a machine with internet run "
            f"python -c \"from huggingface_hub import hf_hub_download; hf_hub_download('{cfg.hf_hub_id}', "
            f"'model.safetensors')\" and copy the cache (or set HF_HOME), or pass --pretrained FILE or none")

    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
    if not target.is_file():
        if offline():
            raise WeightsError(f"--pretrained imagenet: the weights of {timm_name} are not in the torch hub cache "
                               f"({target}) and HF_HUB_OFFLINE is set; download {cfg.url} to that path on a machine "
                               "with internet, or pass --pretrained FILE or none")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(cfg.url, str(target))
        except Exception as e:
            raise WeightsError(f"--pretrained imagenet: downloading {cfg.url} failed ({type(e).__name__}); download "
                               f"it to {target} by hand, or pass --pretrained FILE or none") from None
    return target


@dataclass(frozen=True)
class Pretrained:
    """The `pretrained` setting, parsed once (config, builders and embed.py all read this): `none`
    (random initialisation), `imagenet` (the arch's timm weights from the caches), named HPA weights
    (hpa.models.hpa_weights, fetched once) or a weights file."""
    kind: Literal["none", "imagenet", "named", "file"]
    text: str  # as written: the name or the path

    @classmethod
    def parse(cls, value: str | Path | Pretrained | None) -> Pretrained:
        if isinstance(value, Pretrained):
            return value
        if value is None or str(value).lower() == "none":
            return cls("none", "none")
        if value == "imagenet":
            return cls("imagenet", "imagenet")
        from hpa.models import hpa_weights

        return cls("named" if hpa_weights.is_named(str(value)) else "file", str(value))

    def file(self, timm_name: str | None) -> Path | None:
        """The weights file: None for `none`, the cached (or once downloaded) ImageNet file of
        `timm_name`, the fetched named weights, or the path given."""
        if self.kind == "none":
            return None
        if self.kind == "imagenet":
            if timm_name is None:
                raise WeightsError("--pretrained imagenet: this arch has no ImageNet weights; use --pretrained none")
            return imagenet_weights(timm_name)
        if self.kind == "named":
            from hpa.models import hpa_weights

            return hpa_weights.fetch(self.text)
        return Path(self.text)

    def tag(self, arch: str) -> str:
        """A name for what these weights make of `arch` (an embedding store's key)."""
        if self.kind == "named":
            return self.text
        return f"{arch}-" + {"none": "random", "imagenet": "imagenet"}.get(self.kind, Path(self.text).stem)
