"""What training, prediction and embedding share at run time: the device and precision choices, the
one default worker count, loader processes forked by a fork server (never by a process that runs
other threads), and progress bars."""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import select
import threading
import time
from collections.abc import Callable

import torch

from hpa.errors import ConfigError

AMP_MODES = ("bf16", "fp16", "off")
# One default for every worker count (--workers, a config's `workers`, the recipe): enough processes to keep a
# GPU fed, no more than the cores.
DEFAULT_WORKERS = min(8, os.cpu_count() or 1)


def pick_device(name: str = "auto") -> torch.device:
    """`auto` (a GPU when there is one), `cpu`, `cuda` or `cuda:N`; a device that is not there is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name}: not a device name (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"--device {name}: no such CUDA device on this machine "
                          f"({torch.cuda.device_count()} GPU(s)); use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name}: only cpu and cuda devices are supported")
    return device


def autocast(device: torch.device, amp: str):
    """bf16 works on CPU and recent GPUs without loss scaling; fp16 needs a GradScaler in training."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def loader_processes(workers: int, dataset: object, init: Callable[[int], None] | None = None) -> dict:
    """DataLoader arguments for `workers` worker processes, forked by a fork server rather than by
    this process, each running `init(worker_id)` first. Forking a process that runs other threads
    (TensorBoard's writer, tqdm's monitor, gloo's) can leave the child blocked for ever on a lock one
    of them held: seen on a DDP rank whose validation worker never left CPython's after-fork
    clean-up, the rank waiting for its batch and the other rank in all_gather. The server is a
    fresh single-threaded process that imports the dataset's module (and with it torch) once per
    process, not per epoch; Python 3.14 makes it the default on Linux for this reason."""
    if workers <= 0:
        return {"num_workers": 0}
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([type(dataset).__module__])
    return {"num_workers": workers, "multiprocessing_context": ctx,
            "worker_init_fn": functools.partial(_worker_start, os.getpid(), init)}


def _worker_start(main_pid: int, init: Callable[[int], None] | None, worker_id: int) -> None:
    """A worker's parent is the fork server, so torch's check that the parent lives no longer sees the
    loader's process die: a worker ends with it (a kill -9 or an OOM kill left the workers, and the
    server they keep alive, running for ever)."""
    threading.Thread(target=_exit_after, args=(main_pid,), daemon=True).start()
    if init is not None:
        init(worker_id)


def _exit_after(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)  # Linux: readable once the process has ended, whatever reuses its id
    except (AttributeError, OSError):  # elsewhere, or the process already gone: ask every 2 s
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(0)
            time.sleep(2)
    select.select([fd], [], [])
    os._exit(0)


# Progress bars draw only on a terminal: redirected output (a log file, a SLURM job, a worker of
# ablate.py --jobs) gets the one line per epoch or stage that the callers print instead.
SHOW_PROGRESS = True


def progress(iterable=None, **kw):
    """tqdm that stays silent unless stderr is a terminal (and the caller does not disable it)."""
    import sys

    from tqdm import tqdm

    off = kw.pop("disable", False)
    return tqdm(iterable, disable=off or not (SHOW_PROGRESS and sys.stderr.isatty()), dynamic_ncols=True, **kw)
