"""Device and mixed-precision choices shared by training and prediction."""

from __future__ import annotations

import contextlib

import torch

AMP_MODES = ("bf16", "fp16", "off")


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device, amp: str):
    """bf16 works on CPU and recent GPUs without loss scaling; fp16 needs a GradScaler in training."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
