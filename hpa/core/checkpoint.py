"""Checkpoints: one dict with model, optimizer, scheduler, scaler, epoch, best metric, RNG states
and config, written atomically and read back with `weights_only=True`."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch

from hpa.core.atomic import atomic_write_stream
from hpa.errors import CheckpointError


def rng_state() -> dict:
    """Every random state a resumed run needs to continue as if never stopped: Python's, NumPy's,
    torch's CPU generator and each CUDA device's."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda, "python": list(random.getstate()[1]),
            "python_version": random.getstate()[0], "python_gauss": random.getstate()[2],
            "numpy": torch.from_numpy(keys.astype(np.int64)), "numpy_pos": int(pos),
            "numpy_gauss": [int(has_gauss), float(gauss)]}


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    cuda = s.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)  # a resume on another GPU count keeps the seeded CUDA states
    random.setstate((s["python_version"], tuple(s["python"]), s["python_gauss"]))
    np.random.set_state(("MT19937", s["numpy"].numpy().astype(np.uint32), s["numpy_pos"],
                         int(s["numpy_gauss"][0]), float(s["numpy_gauss"][1])))


def save_checkpoint(path: Path, state: dict) -> None:
    """Serialised straight into a temporary file beside `path`, then renamed onto it: no copy of the
    whole state in memory (se_resnext50 with Adam's moments is 0.3 GB, senet154 1.7 GB), and a full
    disk stops the serializer with ENOSPC, reported in one line naming the file; the old file stays."""
    atomic_write_stream(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path, way_out: str = "", *, mmap: bool = False) -> dict:
    """A checkpoint dict, loaded with weights_only=True. `way_out` ends the one-line error of a
    missing or unreadable file with what the caller's user can do about it. `mmap`: tensors are
    read from the file when touched, so a caller that wants the model alone never reads the
    optimizer's moments (two thirds of an Adam checkpoint)."""
    path = Path(path)
    tail = f"; {way_out}" if way_out else ""
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found{tail}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        first = re.split(r"(?<=\.)\s", first)[0]  # its first sentence, whole, never cut in the middle
        raise CheckpointError(f"{path}: cannot be read as a checkpoint: it is cut short or not a checkpoint "
                              f"({type(e).__name__}: {first}){tail}") from None
    if not isinstance(ck, dict) or not {"model", "config", "epoch"} <= set(ck):
        raise CheckpointError(f"{path}: not a training checkpoint of this toolkit (no model/config/epoch){tail}")
    return ck
