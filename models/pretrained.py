"""Loading pretrained 3-channel weights from a local file into a 4-channel network.

The first convolution is adapted with timm's `adapt_input_conv`: the RGB kernels are repeated
cyclically over the 4 input channels (R, G, B, R) and scaled by 3/4, so the 4th (yellow, ER)
channel starts as 0.75 x the red kernel and the layer's response to an input of the same mean
intensity is unchanged. Classifier weights in the file (fc, last_linear, classifier, head) are
ignored: the network's own head is trained from scratch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from hpa.errors import HPAError

log = logging.getLogger(__name__)
_CLASSIFIER_PREFIXES = ("fc.", "last_linear.", "classifier.", "head.fc.", "head.")


class WeightsError(HPAError, ValueError):
    """A weights file is missing or does not fit the model; the message names the file."""


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from e
    for key in ("state_dict", "model"):  # training checkpoints wrap the weights
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_pretrained(model: nn.Module, path: Path) -> None:
    from timm.models import adapt_input_conv

    sd = read_state_dict(path)
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
