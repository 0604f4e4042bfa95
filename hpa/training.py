"""The training engine: data, optimizer and schedule builders, one step, one epoch, evaluation,
the LR range test, and `train`, which runs (or resumes) one fold of one arch into its run directory.

A run directory `<runs>/<arch>_<size>/f<fold>/` holds `config.yaml` (the merged TrainConfig),
`provenance.json` (what it was trained on), `log.csv`, `lr_steps.csv`, plots, `class_counts.csv`,
and `last.pt` / `best.pt` (one dict: model, optimizer, scheduler, scaler, epoch, best metric,
history, RNG states, config, provenance), loaded with `weights_only=True`.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import math
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
from tqdm import tqdm

from hpa import distributed
from hpa.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from hpa.config import TrainConfig, changed_settings, save_yaml
from hpa.dataset import HPADataset, crop_side, prepared_dir
from hpa.errors import ConfigError, RunError
from hpa.io import atomic_write_csv, atomic_write_text, file_sha256, ids_sha256
from hpa.labels import NUM_CLASSES, count_reasons, labels_matrix, read_folds, read_label_tables
from hpa.losses import build_loss, hard_example_loss
from hpa.metrics import f1_per_class
from hpa.report import plot_lr_find, plot_lr_schedule, plot_training_curves
from hpa.runtime import autocast, pick_device
from hpa.sampling import SideBatchSampler, class_counts_table, oversample_plan
from hpa.schedules import cyclic_cosine, lr_range_test, schedule_shape
from models import build_model

RUN_FILES = ("last.pt", "best.pt", "log.csv", "lr_steps.csv", "config.yaml", "provenance.json", "class_counts.csv",
             "curves.png", "lr_schedule.png", "lr_find.json", "lr_find.png")


def run_dir_of(runs: Path, arch: str, size: int, fold: int) -> Path:
    return Path(runs) / f"{arch}_{size}" / f"f{fold}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def folds_csv_of(cfg: TrainConfig) -> Path:
    return Path(cfg.folds_csv) if cfg.folds_csv else Path(cfg.data_dir) / "folds.csv"


def label_tables(cfg: TrainConfig) -> list[Path]:
    """train.csv, and external.csv (HPAv18) when it exists and `external` is not off."""
    data_dir = Path(cfg.data_dir)
    ext = data_dir / "external.csv"
    return [data_dir / "train.csv"] + ([ext] if cfg.external == "auto" and ext.is_file() else [])


def provenance(cfg: TrainConfig, train_ids: list[str], val_ids: list[str]) -> dict:
    """What a run was trained on, so prediction and blending can refuse other folds or labels."""
    data_dir = Path(cfg.data_dir)
    return {"data_dir": str(data_dir.resolve()), "labels": {p.name: file_sha256(p) for p in label_tables(cfg)},
            "folds_csv": str(folds_csv_of(cfg).resolve()), "folds_sha256": file_sha256(folds_csv_of(cfg)),
            "n_train": len(train_ids), "n_val": len(val_ids),
            "train_ids_sha256": ids_sha256(sorted(train_ids)), "val_ids_sha256": ids_sha256(sorted(val_ids))}


def check_provenance(run_dir: Path, saved: dict, data_dir: Path, folds_csv: Path) -> None:
    """Refuse to use a run with labels or folds other than those it was trained on."""
    files = [("labels", Path(data_dir) / name, sha) for name, sha in saved["labels"].items()]
    for what, path, sha in files + [("folds", Path(folds_csv), saved["folds_sha256"])]:
        if not path.is_file():
            raise RunError(f"{path}: {what} file not found (the run {run_dir} was trained with it)")
        if file_sha256(path) != sha:
            raise RunError(f"{run_dir}: was trained with other {what} than {path} now holds (sha256 "
                           f"{sha[:12]}... vs {file_sha256(path)[:12]}...); retrain the run or restore the file")


@dataclass
class TrainData:
    train: DataLoader
    val: DataLoader
    val_part: list[int]  # this rank's indices into the validation set
    counts: pd.DataFrame  # per-class counts before and after oversampling
    provenance: dict
    note: str  # what the run trains on, for its log


def dropped_reasons(folds_csv: Path) -> str:
    """Why make_folds left samples out, from the `<folds>_dropped.csv` it writes beside the folds."""
    path = folds_csv.with_name(folds_csv.stem + "_dropped.csv")
    if not path.is_file():
        return ""
    reasons = pd.read_csv(path)["reason"].tolist()
    return f": {count_reasons(reasons)}" if reasons else ""


def build_data(cfg: TrainConfig, rank: int = 0, world: int = 1) -> TrainData:
    if not cfg.data_dir:
        raise ConfigError("--data-dir: no dataset directory given (make the demo with input_prep/make_demo.py, "
                          "or see data/README.md)")
    data_dir = Path(cfg.data_dir)
    if not data_dir.is_dir():
        raise ConfigError(f"--data-dir {data_dir}: no such directory")
    tables = label_tables(cfg)
    labels = read_label_tables(tables)
    folds_csv = folds_csv_of(cfg)
    fold_of = read_folds(folds_csv)
    missing = [i for i in labels["Id"] if i not in fold_of]
    if missing:
        raise RunError(f"{folds_csv}: {len(missing)} Ids of {', '.join(p.name for p in tables)} have no fold, e.g. "
                       f"{missing[0]!r}; run input_prep/make_folds.py --labels {' '.join(map(str, tables))}"
                       + ("" if len(tables) > 1 else " (or --external off)"))
    if cfg.fold not in set(fold_of.values()):
        raise ConfigError(f"--fold {cfg.fold}: {folds_csv} has folds {sorted(set(fold_of.values()) - {-1})}")
    y = labels_matrix(labels)
    fold = np.array([fold_of[i] for i in labels["Id"]])
    is_val, is_train = fold == cfg.fold, (fold != cfg.fold) & (fold >= 0)  # fold -1: dropped by make_folds
    ids = labels["Id"].to_numpy()
    repeats = oversample_plan(y[is_train], cfg.oversample_target, cfg.oversample_max)
    counts = class_counts_table(y[is_train], repeats)
    split_dirs = [prepared_dir(data_dir, cfg.size, split) for split in ("train", "external")[:len(tables)]]
    for d in split_dirs:
        if not d.is_dir():
            raise RunError(f"{d}: not prepared; run input_prep/prepare.py --data-dir {data_dir} --size {cfg.size}")
    store = np.array([split_dirs[t] for t in labels["table"]], dtype=object)
    train_ds = HPADataset(np.repeat(store[is_train], repeats).tolist(), np.repeat(ids[is_train], repeats).tolist(),
                          np.repeat(y[is_train], repeats, axis=0),
                          seed=cfg.seed, crop_for=functools.partial(crop_side, size=cfg.size, crop=cfg.crop,
                                                                    crop_large=cfg.crop_large))
    val_ds = HPADataset(store[is_val].tolist(), ids[is_val].tolist(), y[is_val])  # whole stored images
    if len(train_ds) < world or not len(val_ds):
        raise ConfigError(f"--fold {cfg.fold}: {len(train_ds)} training and {len(val_ds)} validation samples in "
                          f"{folds_csv}; each process needs at least one training sample and the fold one to validate")
    sampler = SideBatchSampler(train_ds.sides(), cfg.batch_size, world, rank, shuffle=True, seed=cfg.seed)
    val_sampler = SideBatchSampler(val_ds.sides(), cfg.batch_size, world, rank, shuffle=False, drop_last=False)
    common = dict(num_workers=cfg.workers, persistent_workers=False, pin_memory=torch.cuda.is_available())
    train_dl = DataLoader(train_ds, batch_sampler=sampler, **common)
    val_part = [i for b in val_sampler for i in b]  # this rank's share of the validation set, in its order
    val_dl = DataLoader(val_ds, batch_sampler=val_sampler, **common)
    n_ext = int((labels["table"].to_numpy()[is_train] == 1).sum())
    note = (f"{int(is_train.sum())} training samples ({n_ext} HPAv18 external), {int(is_val.sum())} validation; "
            f"{int((fold < 0).sum())} left out by {folds_csv.name} (fold -1){dropped_reasons(folds_csv)}")
    return TrainData(train_dl, val_dl, val_part, counts, provenance(cfg, ids[is_train].tolist(),
                                                                    ids[is_val].tolist()), note)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
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


def train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: torch.nn.Module,
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, cfg: TrainConfig,
               device: torch.device) -> float:
    """One optimizer step; returns the batch's mean per-sample loss (before hard-example selection)."""
    x, y = to_device(x, cfg, device), y.to(device, non_blocking=True)
    with autocast(device, cfg.amp):
        logits = model(x)
    per_sample = loss_fn(logits.float(), y)
    loss = hard_example_loss(per_sample, cfg.hard_k)
    if cfg.l1 or cfg.l2:
        loss = loss + getattr(model, "module", model).regularization(cfg.l1, cfg.l2)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {loss.item()}")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if cfg.grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return per_sample.mean().item()


def train_single_epoch(model, loader: DataLoader, loss_fn, optimizer, scheduler, scaler, cfg: TrainConfig,
                       device: torch.device, epoch: int, lr_steps: list[float]) -> float:
    model.train()
    total, n = 0.0, 0
    bar = tqdm(loader, desc=f"epoch {epoch} train", leave=False, dynamic_ncols=True, disable=not distributed.is_main())
    for step, (x, y) in enumerate(bar):
        if cfg.limit_batches and step >= cfg.limit_batches:
            break
        lr_steps.append(optimizer.param_groups[-1]["lr"])
        try:
            loss = train_step(model, x, y, loss_fn, optimizer, scaler, cfg, device)
        except FloatingPointError as e:
            raise RunError(f"epoch {epoch}, batch {step}: {e}; stopping (the last good checkpoint is kept). "
                           "Try a lower --lr or --amp off.") from None
        scheduler.step()
        total += loss * len(x)
        n += len(x)
        bar.set_postfix(loss=f"{total / n:.4f}", lr=f"{optimizer.param_groups[-1]['lr']:.2e}")
    sums = distributed.gather((total, n))
    return sum(v[0] for v in sums) / max(sum(v[1] for v in sums), 1)


@torch.no_grad()
def evaluate(model, loader: DataLoader, loss_fn, cfg: TrainConfig, device: torch.device,
             part: list[int]) -> tuple[float, np.ndarray, np.ndarray]:
    """Validation loss, probabilities and targets over the whole validation set (all ranks' shares)."""
    model.eval()
    probs, ys, total = [], [], 0.0
    for x, y in tqdm(loader, desc="validate", leave=False, dynamic_ncols=True, disable=not distributed.is_main()):
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
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    model.train()

    def step() -> float:
        x, y = next(batches)
        try:
            return train_step(model, x, y, loss_fn, optimizer, scaler, cfg, device)
        except FloatingPointError:
            return math.inf

    result = lr_range_test(step, optimizer, start_lr=1e-5, end_lr=10.0, steps=cfg.find_lr_steps)
    model.load_state_dict(init)
    atomic_write_text(run_dir / "lr_find.json", json.dumps(result, indent=1))
    plot_lr_find(result, run_dir / "lr_find.png")
    return result


def guard_run_dir(run_dir: Path, cfg: TrainConfig, resume: bool, overwrite: bool) -> dict | None:
    """Decide what to do with an existing run directory. Returns the checkpoint to resume from,
    or None to start fresh (with `overwrite`, the caller removes the old files once its inputs
    are validated). A finished or partly trained run is never replaced silently, and a
    resume with settings that change what is learned is refused."""
    last = run_dir / "last.pt"
    existing = [f for f in RUN_FILES if (run_dir / f).exists() and f not in ("config.yaml", "provenance.json")]
    if overwrite or not existing:
        return None
    if not resume:
        state = "a trained run"
        if last.is_file():
            ck = load_checkpoint(last)
            done = ck["epoch"] >= ck["config"]["epochs"]
            state = "a finished run" if done else \
                f"a partly trained run (epoch {ck['epoch']} of {ck['config']['epochs']})"
        raise RunError(f"{run_dir}: holds {state}; --resume continues it, --overwrite replaces it, or choose another "
                       "--runs directory")
    if not last.is_file():
        raise RunError(f"{run_dir}: has {', '.join(existing)} but no last.pt to resume from; use --overwrite to "
                       "start again")
    ck = load_checkpoint(last)
    changes = changed_settings(ck["config"], cfg)
    if changes:
        raise RunError(f"{run_dir}: --resume with changed settings ({'; '.join(changes)}); train into another "
                       "--runs directory, or --overwrite to start again")
    return ck


def train(cfg: TrainConfig, runs: Path = Path("runs"), device_name: str = "auto", resume: bool = False,
          overwrite: bool = False, echo: Callable[[str], None] = print) -> Path:
    """Train (or resume) one fold into `<runs>/<arch>_<size>/f<fold>/`; returns the run directory."""
    rank, world, local_rank = distributed.init()
    main_proc = rank == 0  # only rank 0 writes files
    tag = f"[{cfg.arch} f{cfg.fold}]"
    run_dir = run_dir_of(runs, cfg.arch, cfg.size, cfg.fold)
    device = pick_device(device_name)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
    if world > 1 and cfg.find_lr != "off":
        raise ConfigError("--find-lr runs in a single process; run it without torchrun, then pass --lr")
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ConfigError("--amp fp16 needs a CUDA device; use --amp bf16 on CPU")
    ck = guard_run_dir(run_dir, cfg, resume, overwrite)
    if ck is not None and ck["epoch"] >= cfg.epochs:
        echo(f"{tag} already trained for {cfg.epochs} epochs (best val macro F1 {ck['best_f1']:.4f}); run in {run_dir}")
        return run_dir
    seed_everything(cfg.seed)
    data = build_data(cfg, rank, world)
    same = ("labels", "folds_sha256", "train_ids_sha256", "val_ids_sha256")  # not paths: a dataset may move
    if ck is not None and {k: (ck.get("provenance") or {}).get(k) for k in same} != \
            {k: data.provenance[k] for k in same}:
        raise RunError(f"{run_dir}: --resume on other data than the run started with (labels, folds or data "
                       "directory changed); use --overwrite or another --runs directory")
    model = build_model(cfg.arch, pretrained=cfg.pretrained, **cfg.model).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if (cfg.l1 or cfg.l2) and not hasattr(model, "regularization"):
        raise ConfigError(f"l1/l2 regularisation is not available for arch {cfg.arch}")
    core = model  # the bare network: layer groups, checkpoints
    if world > 1:
        if device.type == "cuda" and cfg.sync_bn:  # one set of BatchNorm statistics across GPUs
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    # E-loss counts distinct samples: repeats of an oversampled image add no new feature volume
    loss_fn = build_loss(cfg.loss, data.counts["count"].to_numpy(), alpha_e=cfg.alpha_e, gamma=cfg.gamma,
                         alpha=cfg.focal_alpha).to(device)
    if main_proc:
        echo(f"{tag} {data.note}")
    if main_proc:  # inputs are valid: the first write happens only now
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in [*run_dir.glob(".*.tmp"), *(run_dir / f for f in RUN_FILES if overwrite)]:
            stale.unlink(missing_ok=True)  # a killed writer's temp files; with --overwrite, the old run
        atomic_write_csv(run_dir / "class_counts.csv", data.counts)
        save_yaml(run_dir / "config.yaml", cfg.model_dump())
        atomic_write_text(run_dir / "provenance.json", json.dumps({**data.provenance, "world_size": world}, indent=1))
    lr = cfg.lr
    if cfg.find_lr != "off" and ck is None:
        result = find_lr(model, data.train, loss_fn, cfg, device, run_dir)
        echo(f"{tag} LR range test: chosen lr {result['chosen_lr']:.3g} ({len(result['lrs'])} steps; plot "
             f"{run_dir / 'lr_find.png'})")
        if cfg.find_lr == "use":  # the saved config records the LR the run was trained with
            lr = result["chosen_lr"]
            cfg = cfg.model_copy(update={"lr": lr})
            if main_proc:
                save_yaml(run_dir / "config.yaml", cfg.model_dump())
    optimizer = build_optimizer(core, cfg.model_copy(update={"lr": lr}))
    steps = min(len(data.train), cfg.limit_batches or len(data.train))
    scheduler = build_scheduler(optimizer, cfg, steps)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    start, best, history, lr_steps = 1, -1.0, [], []
    if ck is not None:
        core.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        set_rng_state(ck["rng"])
        start, best, history, lr_steps = ck["epoch"] + 1, ck["best_f1"], ck["history"], ck["lr_steps"]
        echo(f"{tag} resumed from {run_dir / 'last.pt'} at epoch {ck['epoch']}")
    last_plot = time.time()
    for epoch in range(start, cfg.epochs + 1):
        t0 = time.time()
        data.train.dataset.set_epoch(epoch)
        data.train.batch_sampler.set_epoch(epoch)
        train_loss = train_single_epoch(model, data.train, loss_fn, optimizer, scheduler, scaler, cfg, device, epoch,
                                        lr_steps)
        val_loss, p, t = evaluate(model, data.val, loss_fn, cfg, device, data.val_part)
        f1 = f1_per_class(t, p >= 0.5)
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_macro_f1": float(f1.mean()),
               "lr": optimizer.param_groups[-1]["lr"], "seconds": round(time.time() - t0, 2)}
        row.update({f"f1_{k}": float(v) for k, v in enumerate(f1)})
        history.append(row)
        improved = row["val_macro_f1"] > best
        best = max(best, row["val_macro_f1"])
        if not main_proc:
            continue
        state = {"model": core.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
                 "best_f1": best, "history": history, "config": cfg.model_dump(), "rng": rng_state(),
                 "lr_steps": lr_steps, "provenance": data.provenance}
        if improved:
            save_checkpoint(run_dir / "best.pt", state)
        save_checkpoint(run_dir / "last.pt", state)
        logdf = pd.DataFrame(history)
        atomic_write_csv(run_dir / "log.csv", logdf)
        atomic_write_csv(run_dir / "lr_steps.csv", pd.DataFrame({"step": range(1, len(lr_steps) + 1), "lr": lr_steps}))
        if epoch == cfg.epochs or time.time() - last_plot > 30:  # a plot costs ~0.5 s; short epochs skip it
            plot_training_curves(logdf, run_dir / "curves.png")
            plot_lr_schedule(lr_steps, run_dir / "lr_schedule.png")
            last_plot = time.time()
        echo(f"{tag} epoch {epoch}/{cfg.epochs} train_loss {train_loss:.4f} val_loss {val_loss:.4f} "
             f"val_macro_f1 {row['val_macro_f1']:.4f}{' *' if improved else ''} ({row['seconds']:.0f}s)")
    if main_proc:
        echo(f"{tag} best val macro F1 {best:.4f}; run in {run_dir}")
    distributed.barrier()
    distributed.shutdown()
    return run_dir

