"""Class activation maps: where in an image a model found the evidence for a class.

Grad-CAM (Selvaraju et al. 2017) through captum's `LayerGradCam`, on the layer each model names
(`model.cam_layer()`: a CNN's last feature map; a vision transformer's patch tokens reshaped to
their grid). Maps of an ensemble are averaged the way its probabilities are: over the dihedral TTA
views (each view's map turned back to the image's orientation), over the folds of a member, then
over the members with the blend's weights.

captum rather than pytorch-grad-cam (`grad-cam` on PyPI): grad-cam requires `opencv-python`,
which installs a second `cv2` beside the `opencv-python-headless` this project pins; captum needs
only torch and numpy and is maintained by the PyTorch project.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

# each dihedral transform's inverse: rot90 and rot270 undo each other, the rest undo themselves
INVERSE = {"id": "id", "hflip": "hflip", "vflip": "vflip", "rot180": "rot180", "rot90": "rot270",
           "rot270": "rot90", "transpose": "transpose", "antitranspose": "antitranspose"}


def cam_layer(model: nn.Module) -> nn.Module:
    """The layer whose activations Grad-CAM weighs; every registered arch names its own."""
    model = getattr(model, "module", model)
    if not hasattr(model, "cam_layer"):
        raise TypeError(f"{type(model).__name__} names no layer for class activation maps (cam_layer)")
    return model.cam_layer()


def grad_cam(model: nn.Module, x: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Grad-CAM of `model` for each class on a batch (N, 4, H, W) in [0, 1]: (N, len(classes), H, W),
    ReLU'd, at the input's resolution (bilinear), not normalised."""
    from captum.attr import LayerAttribution, LayerGradCam

    model.eval()
    layer = cam_layer(model)
    gc = LayerGradCam(model, layer)
    out = []
    with torch.enable_grad():
        for k in classes:
            # float32: captum's gradients under bf16 autocast lose the small differences the map is made of
            a = gc.attribute(x.float(), target=int(k), relu_attributions=True)
            if a.dim() == 3:  # token maps: (N, tokens, 1) without a grid is not a map
                raise TypeError(f"{type(layer).__name__}: cam layer gives no spatial map")
            out.append(LayerAttribution.interpolate(a.detach(), tuple(x.shape[-2:]), "bilinear").clamp_min(0)[:, 0])
    return torch.stack(out, 1)


def tta_cam(models: Sequence[nn.Module], x: torch.Tensor, classes: Sequence[int],
            tta: Sequence[str]) -> torch.Tensor:
    """The mean Grad-CAM over models (a member's folds) and TTA views, each view's map turned back
    to the orientation of `x`, as hpa.prediction.inference.predict averages their probabilities."""
    from hpa.prediction.inference import dihedral

    total = torch.zeros(len(x), len(classes), *x.shape[-2:])
    for model in models:
        for name in tta:
            total += dihedral(grad_cam(model, dihedral(x, name), classes), INVERSE[name]).cpu()
    return total / (len(models) * len(tta))


def normalise(maps: np.ndarray) -> np.ndarray:
    """Each map scaled to [0, 1] by its own maximum (an all-zero map stays zero)."""
    top = maps.reshape(*maps.shape[:-2], -1).max(-1)[..., None, None]
    return np.where(top > 0, maps / np.where(top > 0, top, 1), 0.0)


# HPA's display colours: microtubules red, protein green, nucleus blue, ER yellow (red + green)
STAIN_RGB = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "yellow": (1.0, 1.0, 0.0)}


def composite(img: np.ndarray, stains: Sequence[str] = ("red", "green", "blue", "yellow")) -> np.ndarray:
    """H x W x 4 uint8 (R, G, B, Y) -> H x W x 3 uint8 RGB in HPA's colours. Yellow is added at
    half strength so the ER does not wash out the protein where both are bright."""
    from hpa.data.labels import COLORS

    rgb = np.zeros(img.shape[:2] + (3,), np.float32)
    for c, color in enumerate(COLORS):
        if color in stains:
            rgb += img[..., c, None].astype(np.float32) * np.array(STAIN_RGB[color]) * (0.5 if color == "yellow" else 1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def overlay(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A [0, 1] map over an RGB image, coloured with matplotlib's `inferno` where it is high."""
    from matplotlib import colormaps

    heat = colormaps["inferno"](np.clip(cam, 0, 1))[..., :3] * 255
    a = alpha * np.clip(cam, 0, 1)[..., None] ** 0.5  # where the map is ~0 the stains show through
    return np.clip(rgb * (1 - a) + heat * a, 0, 255).astype(np.uint8)
