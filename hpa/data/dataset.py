"""Prepared storage and the training dataset.

`input_prep/prepare.py` writes every sample once (hpa.data.layout owns the store), resized to its working side, as an
uncompressed H x W x 4 uint8 `.npy` under `<data_dir>/prepared/<size>/<split>/<Id>.npy`;
loading one is a header parse and a memcpy instead of decoding 4 PNGs. The working side follows
the source (Zhang et al. 2021: 2048 px sources -> 768, 3072 px -> 1024), and nothing downstream
resamples again: training takes random crops whose side follows the stored side, validation and
prediction see the whole stored image, and a batch holds samples of one stored side only.
"""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from hpa.data.arrays import read_prepared, stored_side
from hpa.data.labels import NUM_CLASSES
from hpa.data.layout import prepared_path


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


def build_transforms(crop: int | None, augment: bool = True) -> A.Compose:
    """Training transforms of one stored side: a random `crop` (no resampling), then flips,
    90-degree rotations and per-channel brightness/contrast."""
    ops: list = [A.RandomCrop(crop, crop)] if crop else []
    if augment:
        ops += [A.HorizontalFlip(), A.VerticalFlip(), A.RandomRotate90(), PerChannelBrightnessContrast()]
    return A.Compose(ops)


class HPADataset(Dataset):
    """Samples from prepared storage as (4 x H x W float tensor in [0, 1], 28-dim target). With
    `crop_for` (stored side -> crop side) it trains: random crops and augmentation; without, it
    returns the whole stored image. `stores` is one directory for all samples or one per sample
    (Kaggle train and HPAv18 external samples live in different ones)."""

    def __init__(self, stores: Path | list[Path], ids: list[str], y: np.ndarray | None,
                 crop_for=None, seed: int | None = None, augment: bool = True):
        self.ids, self.y = list(ids), y
        self.stores = [Path(stores)] * len(self.ids) if isinstance(stores, str | Path) else [Path(s) for s in stores]
        self.crop_for, self.augment, self._transforms = crop_for, augment, {}
        self.seed, self.epoch = seed, 0

    def sides(self) -> list[int]:
        """Every sample's stored side (header reads only), for batching by side."""
        return [stored_side(prepared_path(s, i)) for s, i in zip(self.stores, self.ids)]

    def transform(self, side: int) -> A.Compose | None:
        if self.crop_for is None:
            return None
        if side not in self._transforms:
            self._transforms[side] = build_transforms(self.crop_for(side), self.augment)
        return self._transforms[side]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        img = read_prepared(self.stores[i], self.ids[i])
        transform = self.transform(img.shape[0])
        if transform is not None:
            if self.seed is not None:
                # the augmentation of (epoch, sample) is fixed, whatever the worker count or a resume
                transform.set_random_seed((self.seed * 1_000_003 + self.epoch * 10_007 + i) % 2**32)
            img = transform(image=img)["image"]
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)
        y = torch.from_numpy(self.y[i]) if self.y is not None else torch.zeros(NUM_CLASSES)
        return x, y
