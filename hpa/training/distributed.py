"""Multi-process training through torchrun: process group, rank checks, gathering results.

`torchrun --nproc_per_node N train_fold.py ...` sets RANK, LOCAL_RANK and WORLD_SIZE; without
them everything here is a no-op for a single process. NCCL is used on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init() -> tuple[int, int, int]:
    """(rank, world size, local rank); joins the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(backend)
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def local_world() -> int:
    """The processes torchrun started on this machine (LOCAL_WORLD_SIZE), which share its memory."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def gather(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
