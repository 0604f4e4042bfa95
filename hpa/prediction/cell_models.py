"""Published models of single cells, run on each cell of a field.

`bestfitting-2021`: the 2021 competition winner's InceptionV3 as the BioImage Model Zoo holds it
(Zenodo record 5910854, version 6539073; the TorchScript file's sha256 is pinned below). Its input
is one cell in the form the Model Zoo's HPA use case (bioimage-io/use-cases `case3/hpa_app.py`)
gives it: the cell's bounding box of the r g b y stains, pixels outside the cell set to 0, resized
(not padded) to 4 x 128 x 128, values 0-255. It answers the 2021 competition's 19 classes (and a
2048-d feature, not used here); its scores are taken as logits, as the competition's multi-label
networks are trained (sigmoid per class).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hpa.errors import WeightsError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class CellModel:
    weights: str  # the hpa.models.hpa_weights source
    side: int
    classes: str  # the class set it answers (hpa.data.class_sets)


CELL_MODELS = {"bestfitting-2021": CellModel("bestfitting-2021-cells", 128, "hpa2021")}


def load_cell_model(name: str, echo=print) -> torch.jit.ScriptModule:
    """The named cell model's TorchScript (fetched into the weights cache once), on the CPU."""
    import torch

    from hpa.models.hpa_weights import fetch

    path = fetch(CELL_MODELS[name].weights, echo)
    import warnings

    try:
        with warnings.catch_warnings():  # torch marks TorchScript deprecated; it is the Model Zoo's format
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as e:
        raise WeightsError(f"{path}: not a TorchScript model ({type(e).__name__}: {' '.join(str(e).split())[:120]})") \
            from None


def box_crops(img: np.ndarray, labels: np.ndarray, side: int) -> tuple[np.ndarray, list[int]]:
    """Each cell's bounding box, 0 outside the cell, resized to side x side (area interpolation when
    shrinking, bilinear when enlarging): (cells x side x side x 4 uint8, the cell numbers)."""
    import cv2
    from scipy import ndimage as ndi

    out, numbers = [], []
    for k, box in enumerate(ndi.find_objects(labels, max_label=int(labels.max()))):
        if box is None:
            continue
        crop = img[box].copy()
        crop[labels[box] != k + 1] = 0
        shrink = max(crop.shape[:2]) > side
        out.append(cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR))
        numbers.append(k + 1)
    return (np.stack(out) if out else np.zeros((0, side, side, 4), np.uint8)), numbers


def cell_model_scores(model: torch.jit.ScriptModule, spec: CellModel, img: np.ndarray, labels: np.ndarray,
                      n_classes: int, batch_size: int = 64) -> np.ndarray:
    """Per-cell probabilities (one row per cell number 1..max, zeros for a number no cell has)."""
    import torch

    crops, numbers = box_crops(img, labels, spec.side)
    full = np.zeros((int(labels.max()), n_classes))
    with torch.no_grad():
        for start in range(0, len(crops), batch_size):
            x = torch.from_numpy(crops[start:start + batch_size].transpose(0, 3, 1, 2).copy()).float()
            out = model(x)
            logits = out[0] if isinstance(out, (tuple, list)) else out
            if logits.shape[-1] != n_classes:
                raise WeightsError(f"the cell model answers {logits.shape[-1]} classes, not {n_classes}")
            full[[n - 1 for n in numbers[start:start + batch_size]]] = torch.sigmoid(logits.float()).numpy()
    return full
