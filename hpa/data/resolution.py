"""The resolution rules every stage shares: the side a source is stored at (Zhang et al. 2021:
2048 px sources -> 768, 3072 px -> 1024), the one resampling a sample gets, the square padding of
own images, and the training crop of a stored side. Prediction needs them without the training
stack (augmentations, losses), so they live here, apart from hpa.data.dataset."""

from __future__ import annotations

import cv2
import numpy as np


def working_side(src_side: int, size: int, large_size: int | None = None) -> int:
    """The paper's rule: 2048 px (and smaller) sources -> `size`, 3072 px sources -> `large_size`
    (default size * 4/3, so 768 -> 1024)."""
    if src_side >= 3072:
        return large_size or int(round(size * 4 / 3))
    return size


def resize_to_working_side(img: np.ndarray, size: int, large_size: int | None = None) -> np.ndarray:
    """The one resampling a sample gets: to its working side (area interpolation when shrinking)."""
    side = working_side(max(img.shape[:2]), size, large_size)
    if img.shape[:2] == (side, side):
        return img
    interp = cv2.INTER_AREA if side < img.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(img, (side, side), interpolation=interp)


def resize_through(img: np.ndarray, sides: tuple[int, ...]) -> np.ndarray:
    """Bilinear resizing to each side in turn: how a published model's own loader prepared its
    input (bestfitting's predict_d121.py: 1536, then 1024), reproduced so its numbers are too."""
    for side in sides:
        if img.shape[:2] != (side, side):
            img = cv2.resize(img, (side, side), interpolation=cv2.INTER_LINEAR)
    return img


def pad_to_square(img: np.ndarray) -> np.ndarray:
    """A non-square image centred on a black square of its longer side: the models were trained on
    square fields of view, and black is the background of a fluorescence image, so the cells keep
    their proportions instead of being squashed (own images only; Kaggle and HPA images are square)."""
    h, w = img.shape[:2]
    if h == w:
        return img
    side = max(h, w)
    out = np.zeros((side, side) + img.shape[2:], img.dtype)
    top, left = (side - h) // 2, (side - w) // 2
    out[top:top + h, left:left + w] = img
    return out


def crop_side(side: int, size: int, crop: int | None, crop_large: int | None = None) -> int | None:
    """The training crop for a sample stored at `side`: `crop` at the base `size`, `crop_large` (if
    set) for larger stored sides, otherwise the same fraction of the side as crop / size."""
    if crop is None:
        return None
    if side == size:
        return crop
    if crop_large and side > size:
        return min(crop_large, side)
    return min(side, int(round(crop * side / size)))
