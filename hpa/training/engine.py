"""The training engine: data, optimizer and schedule builders, one step, one epoch, evaluation,
the LR range test, and `train`, which runs (or resumes) one fold of one arch into its run directory.

A run directory `<runs>/<arch>_<size>/f<fold>/` holds `config.yaml` (the merged TrainConfig),
`provenance.json` (what it was trained on), `log.csv`, `lr_steps.csv`, plots, `class_counts.csv`,
and `last.pt` / `best.pt` (one dict: model, optimizer, scheduler, scaler, epoch, best metric,
history, RNG states, config, provenance), loaded with `weights_only=True`."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from hpa.config import TrainConfig, save_yaml
from hpa.core.atomic import atomic_hard_link, atomic_write_csv, atomic_write_text
from hpa.core.checkpoint import rng_state, save_checkpoint, set_rng_state
from hpa.core.locks import dir_lock
from hpa.core.runtime import autocast, pick_device, progress
from hpa.data import layout
from hpa.data.labels import NUM_CLASSES
from hpa.data.resolution import crop_side
from hpa.errors import ConfigError, OutOfMemory, RunError, Stopped
from hpa.models import build_model
from hpa.prediction.metrics import f1_per_class
from hpa.prediction.report import plot_lr_find, plot_lr_schedule, plot_training_curves
from hpa.training import distributed, memory
from hpa.training.board import EVENTS_GLOB, Board
from hpa.training.loaders import TrainData, batches_of, build_data
from hpa.training.losses import build_loss, hard_example_loss
from hpa.training.rundir import REPLACE_HINT, check_same_data, guard_run_dir
from hpa.training.schedules import cyclic_cosine, lr_range_test, schedule_shape
from hpa.training.stopping import StopRequest, requeue_slurm_job


def run_tag(cfg: TrainConfig) -> str:
    """`[se_resnext50_1024 f3]`: the member and fold, as the run directory names them (the paper
    recipe has two se_resnext50 members)."""
    return f"[{cfg.arch}_{cfg.size} f{cfg.fold}]"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.layer_decay is not None:
        if not hasattr(model, "layer_decay_groups"):
            raise ConfigError(f"layer_decay: {cfg.arch} is not a vision transformer; use lr_groups")
        params = [{"params": p, "lr": cfg.lr * m} for p, m in model.layer_decay_groups(cfg.layer_decay)]
    else:
        groups = model.layer_groups(len(cfg.lr_groups))
        params = [{"params": p, "lr": cfg.lr * m} for p, m in zip(groups, cfg.lr_groups)]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    cycle_epochs, cycles = schedule_shape(cfg.epochs, cfg.cycle_epochs, cfg.cycles)
    return cyclic_cosine(optimizer, max(1, round(cycle_epochs * steps_per_epoch)), cycles, cfg.min_lr_ratio,
                         cfg.warmup_steps)


def to_device(x: torch.Tensor, cfg: TrainConfig, device: torch.device) -> torch.Tensor:
    """An input batch on the device, in the memory layout the model was put in."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


def hard_k_of(hard_k: int | float | None, part: int, whole: int) -> int | float | None:
    """The hard sampler's k for a micro-batch of `part` samples out of a step's `whole`: a fraction
    stays a fraction, a count is shared in proportion."""
    return max(1, round(hard_k * part / whole)) if isinstance(hard_k, int) and part < whole else hard_k


def train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss_fn: torch.nn.Module,
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, cfg: TrainConfig,
               micro: int | None = None) -> float:
    """One optimizer step over the batch, in micro-batches of `micro` samples (default: all) whose
    gradients accumulate: each micro-batch's loss is weighted by its share of the batch, so the step
    equals one over the whole batch (exactly without BatchNorm and without the hard sampler, which
    then picks its top-k within each micro-batch). With DDP, gradients synchronise once, on the last
    micro-batch. Returns the batch's mean per-sample loss (before hard-example selection). The batch
    goes to the model's device."""
    device = next(model.parameters()).device
    n = len(x)
    sizes = memory.micro_splits(n, micro)
    parts = list(zip(x.split(sizes), y.split(sizes)))
    total = 0.0
    for k, (xc, yc) in enumerate(parts):
        last = k == len(parts) - 1
        with contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync():
            xc, yc = to_device(xc, cfg, device), yc.to(device, non_blocking=True)
            with autocast(device, cfg.amp):
                logits = model(xc)
            per_sample = loss_fn(logits.float(), yc)
            loss = hard_example_loss(per_sample, hard_k_of(cfg.hard_k, len(xc), n))
            if cfg.l1 or cfg.l2:
                loss = loss + getattr(model, "module", model).regularization(cfg.l1, cfg.l2)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()}")
            share = len(xc) / n
            if k == 0:  # after the first forward pass: freeing the old gradients then is 6% faster on CPU
                optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss * share if len(parts) > 1 else loss).backward()
            total += per_sample.mean().item() * share
    if cfg.grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return total


def stored_side_of(cfg: TrainConfig, side: int, training: bool) -> int:
    """The stored side of a batch whose inputs are `side` px: a training batch holds crops of it."""
    for s in cfg.micro_batches or {}:
        if (crop_side(s, cfg.size, cfg.crop, cfg.crop_large) or s if training else s) == side:
            return s
    return side


def micro_of(cfg: TrainConfig, side: int, training: bool = True) -> int | None:
    """The micro-batch for a batch of `side` px inputs (None: the whole batch)."""
    if cfg.micro_batches and stored_side_of(cfg, side, training) in cfg.micro_batches:
        return cfg.micro_batches[stored_side_of(cfg, side, training)]
    return cfg.micro_batch if isinstance(cfg.micro_batch, int) else None


def out_of_memory(cfg: TrainConfig, side: int, micro: int | None, n: int, epoch: int) -> OutOfMemory:
    m = micro or n
    return OutOfMemory(f"{run_tag(cfg)} out of device memory in epoch {epoch} at stored side "
                       f"{side} with micro-batch {m}; set --set micro_batches={{{side}: {max(1, m // 2)}}} (or a "
                       f"smaller micro_batch) and run again with --resume: last.pt of epoch {epoch - 1} is kept")


def train_single_epoch(s: Session, *, epoch: int, lr_steps: list[float], start: dict | None = None,
                       stop: StopRequest | None = None) -> tuple[float, dict | None, int]:
    """Train one epoch of the session's training data, or its rest from `start` (a mid-epoch
    checkpoint's position: steps done, loss sums, random states). Returns (mean training loss, None,
    samples this call trained on over all processes), or on a stop request (loss so far, the position
    to save, samples)."""
    model, loader, loss_fn, cfg = s.model, s.data.train, s.loss_fn, s.cfg
    optimizer, scheduler, scaler = s.optimizer, s.scheduler, s.scaler
    model.train()
    total, n, done = (start["total"], start["n"], start["step"]) if start else (0.0, 0, 0)
    n0 = n
    with batches_of(loader) as batches:  # creating it draws a seed from torch's generator: restore after
        if start:
            set_rng_state(start["rng"])
        bar = progress(batches, total=len(loader), desc=f"epoch {epoch} train", leave=False,
                       disable=not distributed.is_main())
        for step, (x, y) in enumerate(bar, start=done):
            if cfg.limit_batches and step >= cfg.limit_batches:
                break
            if stop and stop.requested():  # workers ignore the signal, so the batch in hand came whole
                sums = distributed.gather((total, n))
                return total / max(n, 1), {"epoch": epoch, "step": step, "total": sum(v[0] for v in sums),
                                           "n": sum(v[1] for v in sums), "rng": rng_state()}, 0
            lr_steps.append(optimizer.param_groups[-1]["lr"])
            micro = micro_of(cfg, x.shape[-1])
            try:
                loss = train_step(model, x, y, loss_fn=loss_fn, optimizer=optimizer, scaler=scaler, cfg=cfg,
                                  micro=micro)
            except FloatingPointError as e:
                raise RunError(f"epoch {epoch}, batch {step}: {e}; stopping (the last good checkpoint is kept). "
                               "Try a lower --lr or --amp off.") from None
            except torch.OutOfMemoryError:
                raise out_of_memory(cfg, stored_side_of(cfg, x.shape[-1], True), micro, len(x), epoch) from None
            scheduler.step()
            total += loss * len(x)
            n += len(x)
            bar.set_postfix(loss=f"{total / n:.4f}", lr=f"{optimizer.param_groups[-1]['lr']:.2e}")
    sums = distributed.gather((total, n, n - n0))
    return sum(v[0] for v in sums) / max(sum(v[1] for v in sums), 1), None, sum(v[2] for v in sums)


@torch.no_grad()
def evaluate(model, loader: DataLoader, *, loss_fn, cfg: TrainConfig, device: torch.device,
             part: list[int]) -> tuple[float, np.ndarray, np.ndarray]:
    """Validation loss, probabilities and targets over the whole validation set (all ranks' shares)."""
    model.eval()
    probs, ys, total = [], [], 0.0
    with batches_of(loader) as batches:
        for xb, yb in progress(batches, total=len(loader), desc="validate", leave=False,
                               disable=not distributed.is_main()):
            micro = micro_of(cfg, xb.shape[-1], training=False) or len(xb)  # no gradients: the training one fits
            for x, y in zip(xb.split(micro), yb.split(micro)):
                x = to_device(x, cfg, device)
                with autocast(device, cfg.amp):
                    logits = model(x).float()
                y = y.to(device)
                total += loss_fn(logits, y).sum().item()
                probs.append(torch.sigmoid(logits).cpu().numpy())
                ys.append(y.cpu().numpy())
    empty = np.zeros((0, NUM_CLASSES))
    shares = distributed.gather((part, np.concatenate(probs) if probs else empty,
                                 np.concatenate(ys) if ys else empty, total))
    order = np.argsort(np.concatenate([s[0] for s in shares]), kind="stable")
    p = np.concatenate([s[1] for s in shares])[order]
    t = np.concatenate([s[2] for s in shares])[order]
    return sum(s[3] for s in shares) / max(len(p), 1), p, t


def find_lr(model, loader: DataLoader, loss_fn, cfg: TrainConfig, device: torch.device, run_dir: Path) -> dict:
    """The LR range test from a copy of the initial state, which is restored afterwards."""
    init = copy.deepcopy(model.state_dict())
    optimizer = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    model.train()

    def cycle():
        while True:
            with batches_of(loader) as it:
                yield from it

    batches = cycle()

    def step() -> float:
        x, y = next(batches)
        try:
            return train_step(model, x, y, loss_fn=loss_fn, optimizer=optimizer, scaler=scaler, cfg=cfg)
        except FloatingPointError:
            return math.inf

    try:
        result = lr_range_test(step, optimizer, start_lr=1e-5, end_lr=10.0, steps=cfg.find_lr_steps)
    finally:
        batches.close()  # shuts the loader's workers down (batches_of), even on an error
    model.load_state_dict(init)
    atomic_write_text(layout.run_file(run_dir, "lr_find"), json.dumps(result, indent=1))
    plot_lr_find(result, layout.run_file(run_dir, "lr_find_plot"))
    return result


@dataclass
class Session:
    """Everything one training run works with, built once by `setup`."""
    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    data: TrainData
    model: torch.nn.Module  # what the step calls (DDP-wrapped with several processes)
    core: torch.nn.Module  # the bare network: layer groups, checkpoints
    loss_fn: torch.nn.Module
    main: bool  # only the main process writes files
    echo: Callable[[str], None]
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    scaler: torch.amp.GradScaler | None = None

    @property
    def tag(self) -> str:
        return run_tag(self.cfg)


def pick_train_device(device_name: str, cfg: TrainConfig, world: int, local_rank: int) -> torch.device:
    if cfg.batch_size < 2 * world:  # before any collective call, so every rank stops with this line
        raise ConfigError(f"--batch-size {cfg.batch_size} with {world} processes: each process needs at least 2 "
                          f"samples of every step (BatchNorm); use a batch of at least {2 * world}")
    device = pick_device(device_name)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
    if world > 1 and cfg.find_lr != "off":
        raise ConfigError("--find-lr runs in a single process; run it without torchrun, then pass --lr")
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ConfigError("--amp fp16 needs a CUDA device; use --amp bf16 on CPU")
    return device


def with_micro_batches(cfg: TrainConfig, ck: dict | None, model: torch.nn.Module, loss_fn: torch.nn.Module,
                       device: torch.device, sides: list[int], world: int) -> TrainConfig:
    """The config with `micro_batches` filled in for `micro_batch: auto`: a resumed run reuses what
    its checkpoint recorded, a new one probes the device (hpa.training.memory)."""
    if cfg.micro_batch != "auto" or cfg.micro_batches:
        return cfg
    saved = ((ck or {}).get("config") or {}).get("micro_batches")
    chosen = saved or memory.micro_batches(model, loss_fn, cfg, device, sides, math.ceil(cfg.batch_size / world))
    return cfg.model_copy(update={"micro_batches": {int(k): int(v) for k, v in chosen.items()}})


def setup(cfg: TrainConfig, run_dir: Path, device: torch.device, rank: int, echo: Callable[[str], None],
          ck: dict | None, resume: bool, hint: str = REPLACE_HINT) -> Session:
    """Data, model, loss (for this process, `rank` of distributed.world()); then the run directory's
    first writes, once every input is valid."""
    world = distributed.world()
    seed_everything(cfg.seed)
    data = build_data(cfg, rank, world)
    if resume:
        check_same_data(run_dir, ck, data, hint)
    model = build_model(cfg.arch, pretrained=cfg.pretrained, **cfg.model).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if (cfg.l1 or cfg.l2) and not hasattr(model, "regularization"):
        raise ConfigError(f"l1/l2 regularisation is not available for arch {cfg.arch}")
    # E-loss counts distinct samples: repeats of an oversampled image add no new feature volume
    loss_fn = build_loss(cfg.loss, data.counts["count"].to_numpy(), alpha_e=cfg.alpha_e, gamma=cfg.gamma,
                         alpha=cfg.focal_alpha).to(device)
    cfg = with_micro_batches(cfg, ck, model, loss_fn, device, data.sides, world)
    unused = sorted(set(cfg.micro_batches or {}) - set(data.sides))
    if unused:
        raise ConfigError(f"micro_batches: stored side(s) {unused} do not occur in the training data (its stored "
                          f"sides: {data.sides}); key the map by those")
    core = model
    if world > 1:
        if device.type == "cuda" and cfg.sync_bn:  # one set of BatchNorm statistics across GPUs
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    s = Session(cfg, run_dir, device, data, model, core, loss_fn, rank == 0, echo)
    if s.main:
        echo(f"{s.tag} {data.note}")
        share = math.ceil(cfg.batch_size / world)
        per_side = cfg.micro_batches or {side: micro_of(cfg, side) or share for side in data.sides}
        echo(f"{s.tag} batch {cfg.batch_size} per step = {world} process(es) x micro-batch x micro-batches: "
             f"{memory.describe(per_side, share, cfg)}")
        fresh = ck is None
        old = [*(run_dir / f for f in layout.RUN_FILES.values()), *run_dir.glob(EVENTS_GLOB)] if fresh else []
        for stale in [*run_dir.glob(".*.tmp"), *old]:
            stale.unlink(missing_ok=True)  # a killed writer's temp files; on a fresh start, an old attempt's files
        atomic_write_csv(layout.run_file(run_dir, "class_counts"), data.counts)
        save_yaml(layout.run_file(run_dir, "config"), cfg.model_dump())
        atomic_write_text(layout.run_file(run_dir, "provenance"),
                          json.dumps({**data.provenance, "world_size": world}, indent=1))
    return s


def build_state(s: Session, lr: float) -> None:
    """Optimizer, schedule and scaler (after the LR range test, which may choose the LR)."""
    s.optimizer = build_optimizer(s.core, s.cfg.model_copy(update={"lr": lr}))
    steps = min(len(s.data.train), s.cfg.limit_batches or len(s.data.train))
    s.scheduler = build_scheduler(s.optimizer, s.cfg, steps)
    s.scaler = torch.amp.GradScaler(s.device.type, enabled=s.cfg.amp == "fp16")


def maybe_find_lr(s: Session) -> float:
    """The LR to train with: the config's, or with find_lr the range test's (recorded in the saved config)."""
    if s.cfg.find_lr == "off":
        return s.cfg.lr
    result = find_lr(s.model, s.data.train, s.loss_fn, s.cfg, s.device, s.run_dir)
    s.echo(f"{s.tag} LR range test: chosen lr {result['chosen_lr']:.3g} ({len(result['lrs'])} steps; plot "
           f"{layout.run_file(s.run_dir, 'lr_find_plot')})")
    if s.cfg.find_lr != "use":
        return s.cfg.lr
    s.cfg = s.cfg.model_copy(update={"lr": result["chosen_lr"]})
    if s.main:
        save_yaml(layout.run_file(s.run_dir, "config"), s.cfg.model_dump())
    return result["chosen_lr"]


def restore(s: Session, ck: dict) -> tuple[int, float, list, list, dict | None]:
    """Every state a resumed run continues from: (next epoch, best F1, history, LR per step, the
    position inside that epoch when it stopped there)."""
    s.core.load_state_dict(ck["model"])
    s.optimizer.load_state_dict(ck["optimizer"])
    s.scheduler.load_state_dict(ck["scheduler"])
    s.scaler.load_state_dict(ck["scaler"])
    set_rng_state(ck["rng"])
    partial = ck.get("partial")
    s.echo(f"{s.tag} resumed from {layout.run_file(s.run_dir, 'last')} at epoch {ck['epoch']}"
           + (f", step {partial['step']} of epoch {partial['epoch']}" if partial else ""))
    return ck["epoch"] + 1, ck["best_f1"], ck["history"], ck["lr_steps"], partial


def checkpoint_state(s: Session, *, epoch: int, best: float, history: list, lr_steps: list, rng: dict,
                     partial: dict | None = None) -> dict:
    """The one checkpoint dict (last.pt and best.pt): everything a resume needs. `epoch` is the last
    finished epoch; `partial` the position inside the next one when a run stops mid-epoch."""
    state = {"model": s.core.state_dict(), "optimizer": s.optimizer.state_dict(),
             "scheduler": s.scheduler.state_dict(), "scaler": s.scaler.state_dict(), "epoch": epoch,
             "best_f1": best, "history": history, "config": s.cfg.model_dump(), "rng": rng,
             "lr_steps": lr_steps, "provenance": s.data.provenance}
    return state | ({"partial": partial} if partial is not None else {})


def save_epoch(s: Session, epoch: int, best: float, improved: bool, history: list, lr_steps: list,
               last_plot: float) -> float:
    """The checkpoint policy: best.pt when validation macro F1 improved, then last.pt every epoch (in
    that order, so a run always has a best.pt once it has a last.pt), the log, and plots at most
    every 30 s. Returns the time of the last plot. An improving epoch's last.pt is the same bytes as
    its best.pt, so it becomes a hard link to it rather than a second write of the whole state."""
    state = checkpoint_state(s, epoch=epoch, best=best, history=history, lr_steps=lr_steps, rng=rng_state())
    best_pt, last_pt = layout.run_file(s.run_dir, "best"), layout.run_file(s.run_dir, "last")
    if improved:
        save_checkpoint(best_pt, state)
    if not (improved and atomic_hard_link(best_pt, last_pt)):
        save_checkpoint(last_pt, state)
    logdf = pd.DataFrame(history)
    atomic_write_csv(layout.run_file(s.run_dir, "log"), logdf)
    atomic_write_csv(layout.run_file(s.run_dir, "lr_steps"),
                     pd.DataFrame({"step": range(1, len(lr_steps) + 1), "lr": lr_steps}))
    if epoch == s.cfg.epochs or time.time() - last_plot > 30:  # a plot costs ~0.5 s; short epochs skip it
        plot_training_curves(logdf, layout.run_file(s.run_dir, "curves"))
        plot_lr_schedule(lr_steps, layout.run_file(s.run_dir, "lr_schedule"))
        return time.time()
    return last_plot


def save_stop(s: Session, position: dict, best: float, history: list, lr_steps: list, stop: StopRequest) -> Stopped:
    """last.pt at a step inside an epoch (`partial`: the position, loss sums and random states), and
    the one-line stop that the same command resumes from."""
    epoch, step = position["epoch"], position["step"]
    if s.main:
        state = checkpoint_state(s, epoch=epoch - 1, best=best, history=history, lr_steps=lr_steps,
                                 rng=position["rng"], partial=position)
        save_checkpoint(layout.run_file(s.run_dir, "last"), state)
    return Stopped(f"{s.tag} stopped by {stop.name} at epoch {epoch}, step {step}: last.pt saved there"
                   f"{requeue_slurm_job() if s.main else ''}; run the same command again to resume")


def epoch_loop(s: Session, start: int, best: float, history: list, lr_steps: list, partial: dict | None = None,
               stop: StopRequest | None = None) -> float:
    """Train and validate each remaining epoch (the first from `partial`'s step when resuming inside
    it), checkpointing after each; returns the best F1. A stop request saves last.pt at the step it
    came in (or after the epoch's checkpoint) and raises Stopped."""
    last_plot = time.time()
    board = Board(s.run_dir, start, s.cfg.model_dump()) if s.main else None
    try:
        return _epochs(s, start, best, history, lr_steps, partial, stop, board, last_plot)
    finally:
        if board:
            board.close()


def _epochs(s: Session, start: int, best: float, history: list, lr_steps: list, partial: dict | None,
            stop: StopRequest | None, board: Board | None, last_plot: float) -> float:
    for epoch in range(start, s.cfg.epochs + 1):
        t0 = time.time()
        part = partial if partial and partial["epoch"] == epoch else None
        if part and not s.main:  # the saved loss sums are over all ranks: rank 0 carries them
            part = {**part, "total": 0.0, "n": 0}
        s.data.train.dataset.set_epoch(epoch)
        s.data.train.batch_sampler.set_epoch(epoch, skip=part["step"] if part else 0)
        train_loss, stopped, seen = train_single_epoch(s, epoch=epoch, lr_steps=lr_steps, start=part, stop=stop)
        if stopped:
            raise save_stop(s, stopped, best, history, lr_steps, stop)
        t_train = time.time() - t0
        val_loss, p, t = evaluate(s.model, s.data.val, loss_fn=s.loss_fn, cfg=s.cfg, device=s.device,
                                  part=s.data.val_part)
        f1 = f1_per_class(t, p >= 0.5)
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_macro_f1": float(f1.mean()),
               "lr": s.optimizer.param_groups[-1]["lr"], "seconds": round(time.time() - t0, 2),
               "train_images_per_s": round(seen / max(t_train, 1e-9), 2), "peak_mem_mib": round(
                   memory.peak_memory(s.device, reset=True) / 2**20, 1)}
        row.update({f"lr_group{g}": group["lr"] for g, group in enumerate(s.optimizer.param_groups)})
        row.update({f"f1_{k}": float(v) for k, v in enumerate(f1)})
        history.append(row)
        improved = row["val_macro_f1"] > best
        best = max(best, row["val_macro_f1"])
        if s.main:
            # events before the checkpoint: a crash between the two repeats the epoch, whose events
            # the resumed run's purge_step then drops
            board.epoch(row)
            board.images(epoch, s.core, s.data.board_images)
            last_plot = save_epoch(s, epoch, best, improved, history, lr_steps, last_plot)
            s.echo(f"{s.tag} epoch {epoch}/{s.cfg.epochs} train_loss {train_loss:.4f} val_loss {val_loss:.4f} "
                   f"val_macro_f1 {row['val_macro_f1']:.4f}{' *' if improved else ''} ({row['seconds']:.0f}s)")
        if stop and epoch < s.cfg.epochs and stop.requested():
            raise Stopped(f"{s.tag} stopped by {stop.name} at the end of epoch {epoch}: last.pt saved there"
                          f"{requeue_slurm_job() if s.main else ''}; run the same command again to resume")
    return best


def train(cfg: TrainConfig, *, runs: Path = layout.DEFAULT_RUNS, device_name: str = "auto", resume: bool = False,
          overwrite: bool = False, echo: Callable[[str], None] = print, hint: str = REPLACE_HINT) -> Path:
    """Train (or resume) one fold into `<runs>/<arch>_<size>/f<fold>/`; returns the run directory.
    `hint` is how the caller's user replaces a run (the refusals end with it)."""
    rank, world, local_rank = distributed.init()
    run_dir = layout.run_dir(runs, cfg.arch, cfg.size, cfg.fold)
    device = pick_train_device(device_name, cfg, world, local_rank)
    lock = dir_lock(layout.lock_file(run_dir), "run directory") if rank == 0 else contextlib.nullcontext()
    with lock, StopRequest() as stop:
        if rank == 0:
            echo(f"{run_tag(cfg)} process {os.getpid()}: SIGTERM or SIGUSR1 stops the run at the next step "
                 "with last.pt saved there")
        ck = guard_run_dir(run_dir, cfg, resume, overwrite, hint)
        if ck is not None and ck["epoch"] >= cfg.epochs and not layout.finished_run(run_dir, cfg.epochs):
            # stopped between the last epoch's last.pt and its log: the checkpoint holds the log
            atomic_write_csv(layout.run_file(run_dir, "log"), pd.DataFrame(ck["history"]))
        if ck is not None and layout.finished_run(run_dir, cfg.epochs):
            # else prediction asks for a fold that training calls done
            if not layout.run_file(run_dir, "best").is_file():
                raise RunError(f"{run_dir}: finished training ({cfg.epochs} epochs) but its best.pt is gone; restore "
                               f"it, or train the fold again ({hint})")
            echo(f"{run_tag(cfg)} already trained for {cfg.epochs} epochs (best val macro F1 "
                 f"{ck['best_f1']:.4f}); run in {run_dir}")
            return run_dir
        s = setup(cfg, run_dir, device, rank, echo, ck, resume, hint)
        lr = maybe_find_lr(s) if ck is None else cfg.lr
        build_state(s, lr)
        start, best, history, lr_steps, partial = restore(s, ck) if ck is not None else (1, -1.0, [], [], None)
        best = epoch_loop(s, start, best, history, lr_steps, partial, stop)
        if s.main:
            echo(f"{s.tag} best val macro F1 {best:.4f}; run in {run_dir}")
    distributed.barrier()
    distributed.shutdown()
    return run_dir
