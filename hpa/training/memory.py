"""Micro-batches that fit the device: a short probe of the real model, dtype and crop side.

The paper's batches (80 SE-ResNeXt50 crops of 768 px) need far more memory than one GPU has, so a
step runs as micro-batches whose gradients accumulate (hpa.training.engine.train_step). With
`micro_batch: auto`, each stored side of the training set gets the largest micro-batch whose
forward and backward pass fit, found by doubling then bisection over real steps on random input,
then shrunk by HEADROOM for the fragmentation and the optimizer state a real step adds. The model's
weights, BatchNorm statistics and every random generator are restored afterwards, so probing does
not change what the run learns.

A CPU cannot be probed that way: past its memory the kernel kills the process instead of raising.
There the micro-batch comes from a count: the bytes autograd keeps for the backward pass per sample
(every tensor saved in a forward pass, counted once per storage, at two batch sizes so the weights
and their casts cancel out), against a share of the memory the machine (or the job's cgroup) has
available. Samples that fit whole keep the whole share, so small runs are unchanged.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch

from hpa.config import TrainConfig
from hpa.core.runtime import autocast
from hpa.data.labels import NUM_CLASSES
from hpa.data.resolution import crop_side
from hpa.errors import RunError
from hpa.training import distributed

HEADROOM = 0.85  # of the largest micro-batch that fitted in the probe
# of the available memory, for saved activations: the loader, optimizer and allocator need the rest
CPU_MEMORY_SHARE = 0.5


def can_probe(device: torch.device) -> bool:
    """Only a GPU has a memory limit worth probing; on the CPU a step takes the whole share."""
    return device.type == "cuda"


def largest_fitting(fits: Callable[[int], bool], limit: int, low: int = 2) -> int:
    """The largest m in low..limit with fits(m) (or `limit` itself when it fits), for a fits that
    holds up to some m and fails above it: doubling from `low`, then bisection (about 2 log2(limit)
    probes). 0 when nothing fits. `low` is 2 because a micro-batch of one sample leaves BatchNorm a
    single value per channel (an error in training mode)."""
    if fits(limit):
        return limit
    lo, hi, m = 0, limit, low
    while m < hi:
        if not fits(m):
            hi = m
            break
        lo, m = m, m * 2
    if lo == 0:
        return 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def probe_step(model: torch.nn.Module, loss_fn: torch.nn.Module, cfg: TrainConfig, device: torch.device, m: int,
               side: int) -> None:
    """One forward and backward pass of `m` random crops of `side` px (raises torch.OutOfMemoryError)."""
    x = torch.rand(m, 4, side, side, device=device)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, cfg.amp):
        logits = model(x)
    loss_fn(logits.float(), torch.zeros(m, NUM_CLASSES, device=device)).mean().backward()
    model.zero_grad(set_to_none=True)


def peak_memory(device: torch.device, reset: bool = False) -> int:
    """Peak bytes: the device's allocations since the last reset (CUDA; `reset` starts a new count),
    or the process's peak resident size (CPU, where the OS keeps only the peak since the start)."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        if reset:
            torch.cuda.reset_peak_memory_stats(device)
        return peak
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def saved_bytes_per_sample(model: torch.nn.Module, cfg: TrainConfig, device: torch.device, side: int) -> float:
    """Bytes autograd saves for the backward pass per sample of `side` px: the saved storages of a
    forward pass of 2 samples less those of 1 (what does not grow with the batch, such as the weights
    and their autocast copies, cancels out). In evaluation mode, so that one sample passes BatchNorm
    and no running statistic moves; the dropout masks this leaves out are a fraction of a percent.
    No backward pass runs."""
    def saved(m: int) -> int:
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            # kept alive to the end of the pass, so no address is reused and counted twice; detached, or a
            # saved output would hold its own grad_fn in a cycle that outlives the pass (GiBs leaked at 1024 px)
            return t.detach()

        x = torch.rand(m, 4, side, side, device=device)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(device, cfg.amp):
            model(x)
        return sum(storages.values())

    was_training = model.training
    model.eval()
    try:
        return max(1.0, float(saved(2) - saved(1)))
    finally:
        model.train(was_training)


def available_memory() -> int | None:
    """Bytes this process may still allocate: the machine's MemAvailable, or less where a cgroup
    (a SLURM job's --mem, a container) sets a lower limit; None where Linux does not say."""
    try:
        info = dict(line.split(":", 1) for line in open("/proc/meminfo"))
        free = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit, usage = (open(f).read().strip() for f in (limit_file, usage_file))
            if limit != "max":
                free = min(free, int(limit) - int(usage))
        except (OSError, ValueError):
            continue
    return free


def cpu_micro_batches(model: torch.nn.Module, cfg: TrainConfig, sides: list[int], share: int) -> dict[int, int]:
    """Stored side -> micro-batch on the CPU: as many samples as CPU_MEMORY_SHARE of the available
    memory holds in saved activations (the whole share when it all fits, or where Linux does not say
    what is available). The memory is read after counting: what the counting passes leave with the
    allocator is not free for the step."""
    crops = {side: crop_side(side, cfg.size, cfg.crop, cfg.crop_large) or side for side in sides}
    with torch.random.fork_rng(devices=[]):
        per_sample = {side: saved_bytes_per_sample(model, cfg, torch.device("cpu"), crop)
                      for side, crop in crops.items()}
    budget = available_memory()
    if budget is None:
        return {s: share for s in sides}
    budget //= distributed.local_world()
    out = {}
    for side in sorted(sides):
        m = math.floor(budget * CPU_MEMORY_SHARE / per_sample[side])
        if m < 2:
            raise RunError(f"[{cfg.arch}_{cfg.size}] not even two {crops[side]} px crops (stored side {side}) fit in "
                           f"the {budget / 2**30:.1f} GiB of memory available; use a smaller crop or size")
        out[side] = min(m, share)
    return out


def fits(model, loss_fn, cfg: TrainConfig, device: torch.device, side: int) -> Callable[[int], bool]:
    def attempt(m: int) -> bool:
        try:
            probe_step(model, loss_fn, cfg, device, m, side)
            return True
        except torch.OutOfMemoryError:
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            return False
    return attempt


def micro_batches(model: torch.nn.Module, loss_fn: torch.nn.Module, cfg: TrainConfig, device: torch.device,
                  sides: list[int], share: int) -> dict[int, int]:
    """Stored side -> micro-batch for `micro_batch: auto`: probed on a GPU, counted on the CPU, the
    whole per-process `share` on other devices. Every process of a DDP run gets the smallest of the
    ranks' choices, so all accumulate the same number of micro-batches."""
    if can_probe(device):
        out = probed_micro_batches(model, loss_fn, cfg, device, sides, share)
    elif device.type == "cpu":
        out = cpu_micro_batches(model, cfg, sides, share)
    else:
        return {s: share for s in sides}
    mins = distributed.gather(out)
    return {s: min(r[s] for r in mins) for s in out}


def probed_micro_batches(model: torch.nn.Module, loss_fn: torch.nn.Module, cfg: TrainConfig, device: torch.device,
                         sides: list[int], share: int) -> dict[int, int]:
    state = copy.deepcopy(model.state_dict())
    out = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model.train()
        for side in sorted(sides):
            crop = crop_side(side, cfg.size, cfg.crop, cfg.crop_large) or side
            best = largest_fitting(fits(model, loss_fn, cfg, device, crop), share)
            if best == 0:
                raise RunError(f"[{cfg.arch}_{cfg.size}] not even two {crop} px crops (stored side {side}) fit in "
                               f"device memory; use a smaller crop or size, or --amp bf16")
            out[side] = best if best == share else max(2, math.floor(best * HEADROOM))
    model.load_state_dict(state)
    return out


def micro_splits(n: int, micro: int | None) -> list[int]:
    """The micro-batch sizes of a batch of `n`: ceil(n / micro) parts as equal as possible (16 at 3
    is 3+3+3+3+2+2, not 5 x 3 + 1), so no part holds a single sample unless the whole batch does:
    BatchNorm in training mode cannot normalise one value per channel, and its statistics over two
    are already poor."""
    if not micro or micro >= n:
        return [n]
    k = min(math.ceil(n / micro), max(1, n // 2))
    base, extra = divmod(n, k)
    return [base + 1] * extra + [base] * (k - extra)


def describe(micro: dict[int, int], share: int, cfg: TrainConfig) -> str:
    """'side 768 (crop 512): 20 x 4' for the log: micro-batch x micro-batches per step, as
    micro_splits cuts a share ('3-2 x 6' where the parts differ by one)."""
    def parts(m: int) -> str:
        sizes = micro_splits(share, m)
        return f"{sizes[0]} x {len(sizes)}" if len(set(sizes)) == 1 else f"{max(sizes)}-{min(sizes)} x {len(sizes)}"

    return "; ".join(f"side {s} (crop {crop_side(s, cfg.size, cfg.crop, cfg.crop_large) or s}): {parts(m)}"
                     for s, m in sorted(micro.items()))
