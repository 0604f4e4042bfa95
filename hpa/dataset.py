"""Prepared storage and the training dataset.

`input_prep/prepare.py` writes every sample once, resized to the working size, as an
uncompressed H x W x 4 uint8 `.npy` under `<data_dir>/prepared/<size>/<split>/<Id>.npy`;
loading one is a header parse and a memcpy instead of decoding 4 PNGs.
"""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from hpa.io import SampleError
from hpa.labels import NUM_CLASSES


def prepared_dir(data_dir: Path, size: int, split: str) -> Path:
    return Path(data_dir) / "prepared" / str(size) / split


def working_side(src_side: int, size: int, large_size: int | None = None) -> int:
    """The paper's rule: 2048 px (and smaller) sources -> `size`, 3072 px sources -> `large_size`
    (default size * 4/3, so 768 -> 1024)."""
    if src_side >= 3072:
        return large_size or int(round(size * 4 / 3))
    return size


def load_prepared(store: Path, sample_id: str) -> np.ndarray:
    path = Path(store) / f"{sample_id}.npy"
    try:
        img = np.load(path)
    except FileNotFoundError:
        raise SampleError(f"{path}: not prepared; run input_prep/prepare.py first") from None
    except (ValueError, EOFError, OSError) as e:  # a cut or foreign file
        raise SampleError(f"{path}: corrupt prepared sample ({' '.join(str(e).split())}); delete it and run "
                          "input_prep/prepare.py again") from None
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 4:
        raise SampleError(f"{path}: prepared sample of shape {img.shape} and type {img.dtype}, expected H x W x 4 "
                          "uint8; run input_prep/prepare.py again")
    return img


class PerChannelBrightnessContrast(A.ImageOnlyTransform):
    """Independent brightness and contrast per channel: stains vary in intensity independently."""

    def __init__(self, brightness: float = 0.1, contrast: float = 0.2, p: float = 0.5):
        super().__init__(p=p)
        self.brightness, self.contrast = brightness, contrast

    def get_params_dependent_on_data(self, params, data):
        c, r = data["image"].shape[-1], self.py_random
        return {"gain": np.array([r.uniform(1 - self.contrast, 1 + self.contrast) for _ in range(c)], np.float32),
                "bias": np.array([r.uniform(-self.brightness, self.brightness) * 255 for _ in range(c)], np.float32)}

    def apply(self, img, gain=None, bias=None, **params):
        out = img.astype(np.float32) * gain + bias
        return np.clip(out, 0, 255).astype(np.uint8)


def build_transforms(train: bool, size: int, crop: int | None = None) -> A.Compose:
    """Resize to `size` (a no-op for prepared images of that size), then for training a random
    `crop`, flips, 90-degree rotations and per-channel brightness/contrast."""
    ops: list = [A.Resize(size, size)]
    if train:
        if crop and crop < size:
            ops.append(A.RandomCrop(crop, crop))
        ops += [A.HorizontalFlip(), A.VerticalFlip(), A.RandomRotate90(), PerChannelBrightnessContrast()]
    return A.Compose(ops)


class HPADataset(Dataset):
    """Samples from prepared storage as (4 x H x W float tensor in [0, 1], 28-dim target)."""

    def __init__(self, store: Path, ids: list[str], y: np.ndarray | None, transform: A.Compose | None,
                 seed: int | None = None):
        self.store, self.ids, self.y, self.transform = Path(store), list(ids), y, transform
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        img = load_prepared(self.store, self.ids[i])
        if self.transform is not None:
            if self.seed is not None:
                # the augmentation of (epoch, sample) is fixed, whatever the worker count or a resume
                self.transform.set_random_seed((self.seed * 1_000_003 + self.epoch * 10_007 + i) % 2**32)
            img = self.transform(image=img)["image"]
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)
        y = torch.from_numpy(self.y[i]) if self.y is not None else torch.zeros(NUM_CLASSES)
        return x, y
