"""The prepared arrays: each sample's H x W x 4 uint8 image at its working side, one .npy file per
sample in the prepared store (its path: hpa.data.layout.prepared_path). Read, written, checked whole,
and their side read from the header alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpa.core.atomic import atomic_save_npy
from hpa.data.layout import prepared_path
from hpa.errors import SampleError


def read_prepared(store: Path, sample_id: str) -> np.ndarray:
    path = prepared_path(store, sample_id)
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


def write_prepared(path: Path, img: np.ndarray) -> None:
    atomic_save_npy(path, img)


def is_prepared(path: Path) -> bool:
    """A whole prepared array of the right kind (a cut or foreign file is not)."""
    try:
        arr = np.load(path, mmap_mode="r")
        return arr.ndim == 3 and arr.shape[2] == 4 and arr.dtype == np.uint8
    except (OSError, ValueError):
        return False


def stored_side(path: Path) -> int:
    """The side of a prepared sample, from its .npy header alone."""
    try:
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape = read(f)[0]
    except FileNotFoundError:
        raise SampleError(f"{path}: not prepared; run input_prep/prepare.py first") from None
    except (ValueError, OSError) as e:
        raise SampleError(f"{path}: corrupt prepared sample ({e}); delete it and run input_prep/prepare.py again") \
            from None
    return int(shape[0])
