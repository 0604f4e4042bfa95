"""Train one fold of one arch.

    python train_fold.py --arch se_resnext50 --fold 3 --size 768

Settings come from configs/default.yaml, then configs/<arch>.yaml, then the flags given here.
Writes runs/<arch>_<size>/f<fold>/: config.yaml (merged), log.csv, curves.png, last.pt, best.pt
(by validation macro F1 at threshold 0.5). `--resume` continues from last.pt.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from torch.utils.data import DataLoader, DistributedSampler, Subset  # noqa: E402
from tqdm import tqdm  # noqa: E402

from hpa import distributed  # noqa: E402
from hpa.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state  # noqa: E402
from hpa.config import apply_config_defaults, deep_merge, load_arch_config, read_yaml, save_yaml  # noqa: E402
from hpa.dataset import HPADataset, build_transforms, prepared_dir  # noqa: E402
from hpa.io import (  # noqa: E402
    SampleError,  # noqa: E402
    atomic_write_csv,
    atomic_write_text,
)
from hpa.labels import LabelError, labels_matrix, read_labels  # noqa: E402
from hpa.losses import LOSSES, build_loss, hard_example_loss  # noqa: E402
from hpa.metrics import f1_per_class  # noqa: E402
from hpa.report import plot_lr_find, plot_lr_schedule, plot_training_curves  # noqa: E402
from hpa.runtime import AMP_MODES, autocast, pick_device  # noqa: E402
from hpa.sampling import class_counts_table, oversample_plan  # noqa: E402
from hpa.schedules import CyclicCosine, lr_range_test  # noqa: E402
from models import build_model, list_archs  # noqa: E402
from models.pretrained import WeightsError  # noqa: E402

log = logging.getLogger("train_fold")


def int_or_fraction(v: str) -> int | float | None:
    if v.lower() in ("none", "null", ""):
        return None
    return float(v) if "." in v else int(v)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", required=True, choices=list_archs())
    ap.add_argument("--fold", type=int, required=True)
    ap.add_argument("--config", type=Path, help="extra YAML applied over configs/<arch>.yaml")
    ap.add_argument("--data-dir", type=Path, help="dataset directory (train.csv, prepared/, folds.csv)")
    ap.add_argument("--folds-csv", type=Path, help="Id,fold table (default <data-dir>/folds.csv)")
    ap.add_argument("--size", type=int, help="prepared image size to read")
    ap.add_argument("--crop", type=int, help="random training crop (0 = whole image)")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--optimizer", choices=["sgd", "adamw"])
    ap.add_argument("--lr", type=float, help="learning rate of the head group")
    ap.add_argument("--loss", choices=LOSSES)
    ap.add_argument("--hard-k", type=int_or_fraction, help="hard sampler top-k (int) or fraction; none = off")
    ap.add_argument("--amp", choices=AMP_MODES)
    ap.add_argument("--workers", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--pretrained", type=Path, help="local .pth/.safetensors weights for the encoder")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--out-root", type=Path, default=Path("runs"))
    ap.add_argument("--resume", action="store_true", help="continue from last.pt of this run")
    ap.add_argument("--tensorboard", action="store_true", help="also log to <run dir>/tb (needs tensorboard)")
    ap.add_argument("--find-lr", choices=["off", "report", "use"], default="off",
                    help="LR range test before training: report the chosen LR, or also train with it")
    ap.add_argument("--find-lr-steps", type=int, default=100)
    ap.add_argument("--limit-batches", type=int, default=0, help="stop each epoch after N batches (smoke tests)")
    pre, _ = ap.parse_known_args(argv)
    cfg = load_arch_config(pre.arch) if pre.arch in list_archs() else {}
    if pre.config:
        cfg = deep_merge(cfg, read_yaml(pre.config))
    apply_config_defaults(ap, cfg)
    args = ap.parse_args(argv)
    args.model = cfg.get("model", {})
    for key in ("momentum", "weight_decay", "lr_groups", "cycle_epochs", "cycles", "min_lr_ratio", "oversample_target",
                "oversample_max",
                "warmup_steps", "alpha_e", "gamma", "focal_alpha", "channels_last", "grad_clip", "l1", "l2", "sync_bn"):
        setattr(args, key, cfg.get(key))
    args.crop = args.crop or None
    return args


def config_dict(args: argparse.Namespace) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def open_tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SystemExit("--tensorboard needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str(run_dir / "tb"))


def save_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_data(args: argparse.Namespace, rank: int = 0, world: int = 1):
    data_dir = Path(args.data_dir)
    labels = read_labels(data_dir / "train.csv")
    folds_csv = Path(args.folds_csv) if args.folds_csv else data_dir / "folds.csv"
    if not folds_csv.is_file():
        raise SystemExit(f"{folds_csv}: folds table not found; run input_prep/make_folds.py first")
    folds = pd.read_csv(folds_csv, dtype={"Id": str})
    fold_of = dict(zip(folds["Id"], folds["fold"]))
    missing = [i for i in labels["Id"] if i not in fold_of]
    if missing:
        raise SystemExit(f"{folds_csv}: {len(missing)} train Ids have no fold, e.g. {missing[0]!r}")
    if args.fold not in set(fold_of.values()):
        raise SystemExit(f"--fold {args.fold}: {folds_csv} has folds {sorted(set(fold_of.values()))}")
    y = labels_matrix(labels)
    fold = np.array([fold_of[i] for i in labels["Id"]])
    is_val, is_train = fold == args.fold, (fold != args.fold) & (fold >= 0)  # fold -1: dropped by make_folds
    ids = labels["Id"].to_numpy()
    repeats = oversample_plan(y[is_train], args.oversample_target, args.oversample_max)
    counts = class_counts_table(y[is_train], repeats)
    train_ids = np.repeat(ids[is_train], repeats).tolist()
    store = prepared_dir(data_dir, args.size, "train")
    train_ds = HPADataset(store, train_ids, np.repeat(y[is_train], repeats, axis=0),
                          build_transforms(True, args.size, args.crop), seed=args.seed)
    val_ds = HPADataset(store, ids[is_val].tolist(), y[is_val], build_transforms(False, args.size))
    # One sampler for one process or many: the permutation depends only on (seed, epoch), so a
    # resumed run replays the same order, and N processes with batch B see exactly the batches of
    # one process with batch N x B (rank r takes every N-th index from r).
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=args.seed,
                                 drop_last=True)
    common = dict(batch_size=args.batch_size, num_workers=args.workers, persistent_workers=False,
                  pin_memory=torch.cuda.is_available())
    train_dl = DataLoader(train_ds, sampler=sampler, drop_last=len(sampler) > args.batch_size, **common)
    val_part = list(range(rank, len(val_ds), world))  # each rank validates a disjoint share
    val_dl = DataLoader(Subset(val_ds, val_part), shuffle=False, **common)
    return train_dl, val_dl, val_part, counts


def schedule_shape(epochs: int, cycle_epochs: float | None, cycles: int | None) -> tuple[float, int]:
    """Cycle length and count: a null `cycles` repeats `cycle_epochs` to cover `epochs`; a null
    `cycle_epochs` splits `epochs` into `cycles` equal cycles. So `--epochs` keeps the shape."""
    if cycle_epochs is None and cycles is None:
        raise SystemExit("config: set cycle_epochs, cycles or both")
    if cycle_epochs is None:
        return epochs / cycles, cycles
    if cycles is None:
        return cycle_epochs, max(1, math.ceil(epochs / cycle_epochs))
    return cycle_epochs, cycles


def build_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    groups = model.layer_groups(len(args.lr_groups))
    params = [{"params": p, "lr": args.lr * m} for p, m in zip(groups, args.lr_groups)]
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    return torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)


def to_device(x: torch.Tensor, args: argparse.Namespace, device: torch.device) -> torch.Tensor:
    """An input batch on the device, in the memory layout the model was put in."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if args.channels_last else x


def train_step(model, x, y, loss_fn, optimizer, scaler, args, device) -> float:
    """One optimizer step; returns the batch's mean per-sample loss (before hard-example selection)."""
    x, y = to_device(x, args, device), y.to(device, non_blocking=True)
    with autocast(device, args.amp):
        logits = model(x)
    per_sample = loss_fn(logits.float(), y)
    loss = hard_example_loss(per_sample, args.hard_k)
    if args.l1 or args.l2:
        loss = loss + getattr(model, "module", model).regularization(args.l1 or 0.0, args.l2 or 0.0)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {loss.item()}")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if args.grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return per_sample.mean().item()


def train_single_epoch(model, loader, loss_fn, optimizer, scheduler, scaler, args, device, epoch,
                       lr_steps: list[float]) -> float:
    model.train()
    total, n = 0.0, 0
    bar = tqdm(loader, desc=f"epoch {epoch} train", leave=False, dynamic_ncols=True, disable=not distributed.is_main())
    for step, (x, y) in enumerate(bar):
        if args.limit_batches and step >= args.limit_batches:
            break
        lr_steps.append(optimizer.param_groups[-1]["lr"])
        try:
            loss = train_step(model, x, y, loss_fn, optimizer, scaler, args, device)
        except FloatingPointError as e:
            raise FloatingPointError(f"epoch {epoch}, batch {step}: {e}; stopping (the last good checkpoint is "
                                     "kept). Try a lower --lr or --amp off.") from None
        scheduler.step()
        total += loss * len(x)
        n += len(x)
        bar.set_postfix(loss=f"{total / n:.4f}", lr=f"{optimizer.param_groups[-1]['lr']:.2e}")
    sums = distributed.gather((total, n))
    return sum(v[0] for v in sums) / max(sum(v[1] for v in sums), 1)


def find_lr(model, train_dl, loss_fn, args, device, run_dir: Path) -> float:
    """Run the LR range test from a copy of the initial state, restore it, report the chosen LR."""
    init = copy.deepcopy(model.state_dict())
    optimizer = build_optimizer(model, args)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
    batches = itertools.chain.from_iterable(itertools.repeat(train_dl))
    model.train()

    def step() -> float:
        x, y = next(batches)
        try:
            return train_step(model, x, y, loss_fn, optimizer, scaler, args, device)
        except FloatingPointError:
            return math.inf

    result = lr_range_test(step, optimizer, start_lr=1e-5, end_lr=10.0, steps=args.find_lr_steps)
    model.load_state_dict(init)
    save_json(run_dir / "lr_find.json", result)
    plot_lr_find(result, run_dir / "lr_find.png")
    print(f"[{args.arch} f{args.fold}] LR range test: chosen lr {result['chosen_lr']:.3g} "
          f"({len(result['lrs'])} steps; plot {run_dir / 'lr_find.png'})", flush=True)
    return result["chosen_lr"]


@torch.no_grad()
def evaluate_single_epoch(model, loader, loss_fn, args, device,
                          part: list[int]) -> tuple[float, np.ndarray, np.ndarray]:
    """Validation loss, probabilities and targets over the whole validation set (all ranks' shares)."""
    model.eval()
    probs, ys, total = [], [], 0.0
    for x, y in tqdm(loader, desc="validate", leave=False, dynamic_ncols=True, disable=not distributed.is_main()):
        x = to_device(x, args, device)
        with autocast(device, args.amp):
            logits = model(x).float()
        y = y.to(device)
        total += loss_fn(logits, y).sum().item()
        probs.append(torch.sigmoid(logits).cpu().numpy())
        ys.append(y.cpu().numpy())
    shares = distributed.gather((part, np.concatenate(probs) if probs else np.zeros((0, 28)),
                                 np.concatenate(ys) if ys else np.zeros((0, 28)), total))
    order = np.argsort(np.concatenate([s[0] for s in shares]), kind="stable")
    p = np.concatenate([s[1] for s in shares])[order]
    t = np.concatenate([s[2] for s in shares])[order]
    return sum(s[3] for s in shares) / max(len(p), 1), p, t


def run(args: argparse.Namespace) -> Path:
    rank, world, local_rank = distributed.init()
    main_proc = rank == 0  # only rank 0 writes files
    run_dir = Path(args.out_root) / f"{args.arch}_{args.size}" / f"f{args.fold}"
    if main_proc:
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in run_dir.glob(".*.tmp"):  # left by a writer killed mid-write; the real files are intact
            stale.unlink()
    device = pick_device(args.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
    if world > 1 and args.find_lr != "off":
        raise SystemExit("--find-lr runs in a single process; run it without torchrun, then pass --lr")
    if args.amp == "fp16" and device.type != "cuda":
        raise SystemExit("--amp fp16 needs a CUDA device; use --amp bf16 on CPU")
    seed_everything(args.seed)
    train_dl, val_dl, val_part, counts = build_data(args, rank, world)
    if main_proc:
        atomic_write_csv(run_dir / "class_counts.csv", counts)
        log.info("training samples per class (after oversampling): %s", counts["oversampled"].tolist())
    model = build_model(args.arch, pretrained=str(args.pretrained) if args.pretrained else None,
                        **args.model).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if (args.l1 or args.l2) and not hasattr(model, "regularization"):
        raise SystemExit(f"l1/l2 regularisation is not available for --arch {args.arch}")
    core = model  # the bare network: layer groups, checkpoints
    if world > 1:
        if device.type == "cuda" and args.sync_bn:  # one set of BatchNorm statistics across GPUs
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    # E-loss counts distinct samples: repeats of an oversampled image add no new feature volume
    loss_fn = build_loss(args.loss, counts["count"].to_numpy(), alpha_e=args.alpha_e, gamma=args.gamma,
                         alpha=args.focal_alpha).to(device)
    if args.find_lr != "off":
        chosen = find_lr(model, train_dl, loss_fn, args, device, run_dir)
        if args.find_lr == "use":
            args.lr = chosen
    optimizer = build_optimizer(core, args)
    steps = len(train_dl) if not args.limit_batches else min(len(train_dl), args.limit_batches)
    cycle_epochs, cycles = schedule_shape(args.epochs, args.cycle_epochs, args.cycles)
    scheduler = CyclicCosine(optimizer, max(1, round(cycle_epochs * steps)), cycles, args.min_lr_ratio,
                             args.warmup_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
    cfg = config_dict(args)
    cfg["world_size"] = world
    if main_proc:
        save_yaml(run_dir / "config.yaml", cfg)
    start, best, history, lr_steps = 1, -1.0, [], []
    if args.resume and (run_dir / "last.pt").is_file():
        ck = load_checkpoint(run_dir / "last.pt")
        core.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        set_rng_state(ck["rng"])
        start, best, history, lr_steps = ck["epoch"] + 1, ck["best_f1"], ck["history"], ck["lr_steps"]
        log.info("resumed from %s at epoch %d", run_dir / "last.pt", ck["epoch"])
    tb = open_tensorboard(run_dir) if args.tensorboard and main_proc else None
    last_plot = time.time()
    for epoch in range(start, args.epochs + 1):
        t0 = time.time()
        train_dl.dataset.set_epoch(epoch)
        train_dl.sampler.set_epoch(epoch)
        train_loss = train_single_epoch(model, train_dl, loss_fn, optimizer, scheduler, scaler, args, device, epoch,
                                        lr_steps)
        val_loss, p, t = evaluate_single_epoch(model, val_dl, loss_fn, args, device, val_part)
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
                 "best_f1": best, "history": history, "config": cfg, "rng": rng_state(),
                 "lr_steps": lr_steps}
        if improved:
            save_checkpoint(run_dir / "best.pt", state)
        save_checkpoint(run_dir / "last.pt", state)
        logdf = pd.DataFrame(history)
        atomic_write_csv(run_dir / "log.csv", logdf)
        atomic_write_csv(run_dir / "lr_steps.csv", pd.DataFrame({"step": range(1, len(lr_steps) + 1), "lr": lr_steps}))
        if epoch == args.epochs or time.time() - last_plot > 30:  # a plot costs ~0.5 s; short epochs skip it
            plot_training_curves(logdf, run_dir / "curves.png")
            plot_lr_schedule(lr_steps, run_dir / "lr_schedule.png")
            last_plot = time.time()
        if tb:
            for key in ("train_loss", "val_loss", "val_macro_f1", "lr"):
                tb.add_scalar(key, row[key], epoch)
            tb.flush()
        print(f"[{args.arch} f{args.fold}] epoch {epoch}/{args.epochs} train_loss {train_loss:.4f} "
              f"val_loss {val_loss:.4f} val_macro_f1 {row['val_macro_f1']:.4f}{' *' if improved else ''} "
              f"({row['seconds']:.0f}s)", flush=True)
    if main_proc:
        print(f"[{args.arch} f{args.fold}] best val macro F1 {best:.4f}; run in {run_dir}")
    distributed.barrier()
    distributed.shutdown()
    return run_dir


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    args = parse_args(argv)
    try:
        run(args)
    except (FloatingPointError, LabelError, SampleError, WeightsError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
