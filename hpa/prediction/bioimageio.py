"""A bundle as a BioImage Model Zoo package (bioimage.io, model spec 0.5), for deepImageJ (Fiji),
ilastik, napari and `bioimageio.core`: one TorchScript network that holds the whole ensemble (every
member's folds, its dihedral TTA views, the blend), input `bcyx` with the 4 stains as 8-bit values,
output the 28 blended probabilities. The package is written with `bioimageio.spec`, which
validates it, with a test input (a real or demo image) and the output the network gives for it.

Inside the network a non-square image is first centred on a black square of its longer side, as the
bundle pads own images (hpa.data.resolution.pad_to_square), never stretched; then each member resizes
it to its own base size (area averaging when shrinking, bilinear when enlarging), as the toolkit's
prepare step does for a source of the usual 2048 px (or smaller); the 3072 px rule and multi-size TTA
passes stay with the bundle. Each fold's network is traced on one image and run image by image: a
trace keeps the batch size it saw wherever a network reads it as a number (the ViTs' token grid does),
so a network traced on a batch of one failed on a batch of two.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hpa.core.atomic import atomic_outputs
from hpa.data import layout
from hpa.errors import HPAError
from hpa.prediction.bundle import load_bundle


@torch.jit.script
def to_side(x: torch.Tensor, size: int) -> torch.Tensor:
    """Scripted, so that a traced network keeps the branch for inputs of any side."""
    h = x.shape[-1]
    if h > size:
        return nn.functional.interpolate(x, size=(size, size), mode="area")
    if h < size:
        return nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


@torch.jit.script
def through(x: torch.Tensor, sides: list[int]) -> torch.Tensor:
    """Bilinear resizing to each side in turn (a published model's own loader, as
    hpa.data.resolution.resize_through does it with OpenCV); scripted for inputs of any side."""
    for side in sides:
        if x.shape[-1] != side:
            x = nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    return x


@torch.jit.script
def pad_square(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) centred on a zero (black) square of its longer side; scripted, so that a traced
    network pads inputs of any shape (hpa.data.resolution.pad_to_square on a batch)."""
    h, w = x.shape[-2], x.shape[-1]
    if h == w:
        return x
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    return nn.functional.pad(x, [left, side - w - left, top, side - h - top])


class PerImage(nn.Module):
    """A network traced on one image, run on each image of a batch in turn (scripted: the loop
    follows the batch it is given)."""

    def __init__(self, traced: nn.Module):
        super().__init__()
        self.net = traced

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.net(x[i:i + 1]) for i in range(x.shape[0])])


def per_image(model: nn.Module, side: int) -> nn.Module:
    """`model` traced on one `side` x `side` image, as a scripted module that takes any batch."""
    traced = torch.jit.trace(model.eval(), torch.rand(1, 4, side, side), check_trace=False)
    return torch.jit.script(PerImage(traced))


class EnsembleNet(nn.Module):
    """(B, 4, H, W) in [0, 1] -> (B, classes): the bundle's ensemble in one traceable module. `wrap(model,
    side)` replaces each fold's network (per_image, for the package)."""

    def __init__(self, ensemble, wrap=None):
        super().__init__()
        self.members = nn.ModuleList(nn.ModuleList(wrap(f, m.size) if wrap else f for f in m.models)
                                     for m in ensemble.members)
        self.sizes = [m.size for m in ensemble.members]
        self.resizes = [list(m.resize) for m in ensemble.members]  # a published model's own resizing, else []
        self.tta = [list(m.tta) for m in ensemble.members]
        self.weights = [float(w) for w in ensemble.weights]
        self.logit_space = ensemble.weighting == "logit"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from hpa.prediction.inference import dihedral

        out = []
        x = pad_square(x)
        for models, size, tta, resize in zip(self.members, self.sizes, self.tta, self.resizes):
            xm = through(x, resize) if resize else to_side(x, size)
            acc = sum(torch.sigmoid(model(dihedral(xm, name))) for model in models for name in tta)
            out.append(acc / (len(models) * len(tta)))
        if self.logit_space:
            z = sum(w * torch.logit(p, eps=1e-7) for w, p in zip(self.weights, out))
            return torch.sigmoid(z)
        return sum(w * p for w, p in zip(self.weights, out))


def spdx_licence(licence: str, where: Path) -> str:
    """The SPDX identifier a bioimage.io package needs for a bundle's licence (the Hub writes them in
    lower case: `cc-by-sa-3.0` is `CC-BY-SA-3.0`); one line when there is none, as for a published
    model whose publisher states no licence."""
    import typing

    from bioimageio.spec._internal.license_id import LicenseIdLiteral

    known = {k.lower(): k for k in typing.get_args(LicenseIdLiteral)}
    if str(licence).lower() not in known:
        raise HPAError(f"{where}: licence {licence!r} is no SPDX licence identifier, which a bioimage.io package "
                       "needs (a published model whose publisher states no licence cannot be packaged; for your own "
                       "bundle export again with --licence, e.g. cc-by-sa-3.0 or mit)")
    return known[str(licence).lower()]


def export_bioimageio(bundle_dir: str | Path, out_zip: str | Path, *, test_image: np.ndarray | None = None) -> Path:
    """The bundle as a bioimage.io package (a .zip). `test_image` (H x W x 4 uint8, R G B Y) is the
    package's test input; by default a sample is drawn by the demo generator at the first member's size."""
    import bioimageio.spec.model.v0_5 as v
    from bioimageio.spec import save_bioimageio_package
    from PIL import Image

    from hpa.prediction.explain import composite

    bundle = load_bundle(bundle_dir, "cpu")
    licence = spdx_licence(bundle.config["license"], bundle.path / layout.BUNDLE_FILES["config"])
    for m in bundle.ensemble.members:
        for model in m.models:
            model.to(memory_format=torch.contiguous_format)
    net = EnsembleNet(bundle.ensemble, per_image).eval()
    side = bundle.ensemble.members[0].size
    if test_image is None:
        from hpa.data.demo import render

        test_image = render([0, 25], side, np.random.default_rng(0))
    x = torch.from_numpy(np.ascontiguousarray(test_image.transpose(2, 0, 1)))[None].float()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        files = {role: tmp / name for role, name in layout.BIOIMAGEIO_FILES.items()}
        with torch.no_grad():
            traced = torch.jit.trace(net, x / 255.0, check_trace=False)
            y = traced(x / 255.0).numpy().astype(np.float32)
        traced.save(str(files["weights"]))
        np.save(files["test_input"], x.numpy().astype(np.float32))
        np.save(files["test_output"], y)
        cover = composite(test_image)
        Image.fromarray(cover).resize((256, 256)).save(files["cover"])
        cfg = bundle.config
        (files["documentation"]).write_text(
            "# HPA protein-localisation ensemble\n\nInput: one 4-channel image per sample, channels red "
            "(microtubules), green (protein), blue (nucleus), yellow (ER), 8-bit values (0-255). Output: the "
            f"probability of each of the {len(cfg['classes'])} localisation classes of the model "
            f"({', '.join(cfg['classes'][:3])}, ...; all in thresholds.json, in order), averaged over "
            f"the ensemble's members ({', '.join(m['name'] for m in cfg['members'])}), their folds and dihedral "
            "test-time views, and blended as in hpa-toolkit's bundle. Per-class decision thresholds are in "
            "thresholds.json.\n\nExported by hpa-toolkit "
            f"{cfg['toolkit_version']} from a bundle; the bundle itself predicts folders of images with class "
            "activation maps (`python predict_tta.py --bundle DIR --images DIR`).\n")
        (files["thresholds"]).write_text(json.dumps({"classes": cfg["classes"], "thresholds": cfg["thresholds"]},
                                                        indent=1))
        space = v.ParameterizedSize(min=32, step=16)
        descr = v.ModelDescr(
            name="HPA protein localisation ensemble",
            description=f"Multi-label protein localisation ({len(cfg['classes'])} classes) in Human Protein Atlas "
                        "4-stain confocal images: an hpa-toolkit bundle (an ensemble of its own or a published model).",
            authors=[v.Author(name="hpa-toolkit")],
            cite=[v.CiteEntry(text="Zhang et al., Multi-labelled proteins recognition for high-throughput microscopy "
                                   "images using deep convolutional neural networks. BMC Bioinformatics 22 (2021)",
                              doi=v.Doi("10.1186/s12859-021-04196-0"))],
            license=v.LicenseId(licence),
            documentation=v.FileDescr(source=files["documentation"]),
            covers=[v.FileDescr(source=files["cover"])],
            attachments=[v.FileDescr(source=files["thresholds"])],
            tags=["classification", "fluorescence-light-microscopy", "human-protein-atlas", "protein-localization",
                  "2d", "pytorch"],
            inputs=[v.InputTensorDescr(
                id=v.TensorId("stains"),
                description="red, green, blue, yellow stains as 8-bit values",
                axes=[v.BatchAxis(), v.ChannelAxis(channel_names=[v.Identifier(c) for c in
                                                                  ("red", "green", "blue", "yellow")]),
                      v.SpaceInputAxis(id=v.AxisId("y"), size=space),
                      v.SpaceInputAxis(id=v.AxisId("x"), size=space)],
                test_tensor=v.FileDescr(source=files["test_input"]),
                data=v.IntervalOrRatioDataDescr(type="float32"),
                preprocessing=[v.ScaleLinearDescr(kwargs=v.ScaleLinearKwargs(gain=1 / 255))])],
            outputs=[v.OutputTensorDescr(
                id=v.TensorId("probabilities"),
                description="probability of each localisation class",
                axes=[v.BatchAxis(), v.ChannelAxis(channel_names=[v.Identifier(f"class{k:02d}")
                                                                  for k in range(len(bundle.ensemble.classes))])],
                test_tensor=v.FileDescr(source=files["test_output"]),
                data=v.IntervalOrRatioDataDescr(type="float32"))],
            weights=v.WeightsDescr(torchscript=v.TorchscriptWeightsDescr(
                source=files["weights"], pytorch_version=v.Version(torch.__version__.split("+")[0]))),
        )
        out_zip = Path(out_zip)
        try:
            with atomic_outputs() as staged:  # the package appears whole or not at all
                save_bioimageio_package(descr, output_path=staged(out_zip))
        except HPAError:
            raise
        except Exception as e:
            raise HPAError(f"{out_zip}: the bioimage.io package could not be written "
                           f"({type(e).__name__}: {' '.join(str(e).split())[:300]})") from None
    return out_zip

