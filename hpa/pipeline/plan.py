"""A plan before a multi-day run: for every recipe member, a few timed optimizer steps of the real
model at its real crop and effective batch on the device present (micro-batches chosen as training
would choose them), then the projected wall time of the whole recipe on the visible GPUs, with DDP
and with parallel folds. Trains nothing; writes plan.md.

What is measured: images/s of a full step (forward, backward, optimizer; on a CPU, a step of at
most 8 images of one micro-batch) on random input, and the peak memory. What is estimated, and said
so in the plan: the sample counts (from the label tables and folds, with oversampling), the share of
3072 px sources (from the prepared store, when it exists), prediction time (forward passes, a third
of a training step per image, scaled by pixels, times the TTA count), and DDP's scaling efficiency
(0.9 up to 4 GPUs, 0.85 above: not measurable on one device).
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from hpa.config import TrainConfig
from hpa.data import layout
from hpa.data.arrays import stored_side
from hpa.data.labels import labels_matrix, read_folds, read_ids, read_label_tables
from hpa.data.resolution import crop_side, working_side
from hpa.data.sampling import oversample_plan
from hpa.models import build_model
from hpa.training import memory
from hpa.training.engine import build_optimizer, train_step
from hpa.training.frozen import time_frozen
from hpa.training.losses import build_loss

CPU_TIMED_IMAGES = 8  # images per timed step on a CPU


@dataclass
class Timing:
    member: str
    side: int  # stored side
    crop: int  # the side a training step sees
    share: float  # of the training samples stored at this side
    micro: int
    accumulation: int
    peak_bytes: int
    images_per_s: float


def timed_steps(cfg: TrainConfig, device: torch.device, side: int, steps: int = 2) -> tuple[int, float, int]:
    """(micro-batch, images/s of whole optimizer steps of `cfg.batch_size` samples, peak bytes) for
    crops of the stored `side`, with the micro-batch `micro_batch: auto` would pick on this device."""
    torch.manual_seed(0)
    model = build_model(cfg.arch, pretrained="none", **cfg.model).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg.loss, np.ones(28), alpha_e=cfg.alpha_e, gamma=cfg.gamma, alpha=cfg.focal_alpha).to(device)
    crop = crop_side(side, cfg.size, cfg.crop, cfg.crop_large) or side
    share = cfg.batch_size
    if cfg.micro_batches and side in cfg.micro_batches:  # a member's own map, as training uses it
        micro = min(cfg.micro_batches[side], share)
    elif isinstance(cfg.micro_batch, int):
        micro = min(cfg.micro_batch, share)
    else:
        micro = memory.micro_batches(model, loss_fn, cfg, device, [side], share)[side]
    step_model = torch.compile(model) if cfg.compile else model
    optimizer = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    # a CPU's time per image does not fall with the batch, so there a few images stand for the whole
    # step (minutes of 80 large crops saved per member; the optimizer's share is over-counted)
    timed = share if device.type == "cuda" else min(micro, CPU_TIMED_IMAGES)
    x, y = torch.rand(timed, 4, crop, crop), (torch.rand(timed, 28) > 0.9).float()
    model.train()

    def step(n: int) -> None:
        train_step(step_model, x[:n], y[:n], loss_fn=loss_fn, optimizer=optimizer, scaler=scaler, cfg=cfg,
                   micro=micro)

    step(min(micro, timed))  # warm-up: kernel choice, allocator, compilation
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(timed)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    peak = memory.peak_memory(device)  # on the CPU: everything so far, not this step alone
    return micro, steps * timed / seconds, peak


def side_shares(data_dir: Path, size: int) -> dict[int, float]:
    """Share of the labelled samples per stored side at `size`, from the prepared store's headers
    (all at `size` when nothing is prepared yet)."""
    sides = []
    for table, store in zip(layout.label_tables(data_dir), layout.LABELLED_SPLITS):
        d = layout.prepared_dir(data_dir, size, store)
        if d.is_dir():
            ids = read_label_tables([table])["Id"]
            sides += [stored_side(layout.prepared_path(d, i)) for i in ids
                      if layout.prepared_path(d, i).is_file()]
    if not sides:
        return {size: 1.0}
    values, counts = np.unique(sides, return_counts=True)
    return {int(v): c / len(sides) for v, c in zip(values, counts)}


def training_samples(cfg: TrainConfig, n_folds: int) -> tuple[float, int, int]:
    """(training samples per epoch of one fold with oversampling, validation samples, test samples)."""
    return sample_counts(Path(cfg.data_dir), n_folds, cfg.external, cfg.oversample_target, cfg.oversample_max)


def sample_counts(data_dir: Path, n_folds: int, external: str = "auto", oversample_target: float = 0.0,
                  oversample_max: int = 1) -> tuple[float, int, int]:
    labels = read_label_tables(layout.label_tables(data_dir, external))
    y = labels_matrix(labels)
    folds_csv = layout.folds_csv(data_dir)
    kept = len(y)
    if folds_csv.is_file():
        kept = sum(1 for f in read_folds(folds_csv).values() if f >= 0)
    repeat = oversample_plan(y, oversample_target, oversample_max).mean()
    n_test = len(read_ids(layout.split_table(data_dir, "test")))
    return kept * (n_folds - 1) / n_folds * repeat, math.ceil(kept / n_folds), n_test


def ddp_efficiency(n: int) -> float:
    return 1.0 if n <= 1 else 0.9 if n <= 4 else 0.85


def makespan(durations: list[float], n: int) -> float:
    """Wall time of independent jobs on n GPUs, each next job on the GPU that frees first (the
    recipe's queue), longest first."""
    gpus = [0.0] * max(1, n)
    for d in sorted(durations, reverse=True):
        heapq.heappush(gpus, heapq.heappop(gpus) + d)
    return max(gpus)


def hours(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


class Gpus(NamedTuple):
    """The GPUs a recipe may use here (0: none) and whether folds run one per GPU instead of DDP."""
    count: int
    parallel_folds: bool = False


def make_plan(members: list, configs: list[TrainConfig | None], n_folds: int, tta: int, device: torch.device,
              gpus: Gpus, echo: Callable[[str], None] = print, *,
              data_dir: Path | None = None) -> tuple[str, list[Timing]]:
    """The plan as markdown, and the timings it rests on (`configs`: None for a frozen member)."""
    n_gpus, parallel_folds = gpus
    timings, fold_seconds, frozen_rows, jobs, embedded = [], {}, [], [], set()
    for m, cfg in zip(members, configs):
        if m.frozen:  # embedded once, then a classifier per fold (hpa.training.frozen)
            echo(f"== plan: timing {m.name} (embedding pass and {m.frozen})")
            n_train, n_val, n_test = sample_counts(Path(data_dir), n_folds)  # no oversampling: one pass
            enc = m.encoder(tta)
            ips, width, head_s = time_frozen(enc, m.frozen, m.frozen_settings(), round(n_train), device)
            # members on the same embeddings (a head and a logistic regression) embed once
            embed_s = 0.0 if (enc.key, enc.size, enc.views) in embedded else \
                (n_train + n_val + n_test) * len(enc.views) / ips
            embedded.add((enc.key, enc.size, enc.views))
            frozen_rows.append((m.name, ips, width, embed_s, head_s * n_folds))
            jobs.append(embed_s + head_s * n_folds)
            continue
        shares = side_shares(Path(cfg.data_dir), cfg.size)
        large = working_side(3072, cfg.size)
        for side in sorted(set(shares) | {cfg.size, large}):  # both buckets, even where one is empty today
            echo(f"== plan: timing {m.name} at stored side {side}")
            micro, ips, peak = timed_steps(cfg, device, side)
            timings.append(Timing(m.name, side, crop_side(side, cfg.size, cfg.crop, cfg.crop_large) or side,
                                  shares.get(side, 0.0), micro, len(memory.micro_splits(cfg.batch_size, micro)), peak,
                                  ips))
        n_train, n_val, n_test = training_samples(cfg, n_folds)
        if cfg.limit_batches:  # --smoke and limit_batches: each epoch stops after that many batches
            n_train = min(n_train, cfg.limit_batches * cfg.batch_size)
        mine = [t for t in timings if t.member == m.name and t.share > 0]
        per_image = sum(t.share / t.images_per_s for t in mine)  # seconds per training image, side mix
        train_s = cfg.epochs * (n_train * per_image + n_val * per_image / 3)  # + validation passes
        predict_s = (n_val + n_test) * tta * per_image / 3 * (cfg.size / (cfg.crop or cfg.size)) ** 2
        fold_seconds[m.name] = train_s + predict_s
        jobs += [fold_seconds[m.name]] * n_folds
    n = max(1, n_gpus)
    ddp = sum(jobs) / (n * ddp_efficiency(n))
    par = makespan(jobs, n)
    used = "parallel folds (--parallel-folds)" if parallel_folds else "DDP (without --parallel-folds)"
    better = "parallel folds" if par < ddp else "DDP"
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [f"# Plan: {len(members)} members x {n_folds} folds on {n_gpus or 1} x {dev}", "",
             "Measured here: a few whole optimizer steps of each member at its real crop and effective batch "
             "(random input, weights not loaded), with the micro-batch training would choose on this device"
             + (f" (on a CPU: steps of {CPU_TIMED_IMAGES} images at most, at the time per image of a "
                "whole step)." if device.type != "cuda" else "."), "",
             "| member | stored side | crop | share of samples | micro-batch x accumulation | peak memory | images/s |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {t.member} | {t.side} | {t.crop} | {t.share:.0%} | {t.micro} x {t.accumulation} | "
              f"{t.peak_bytes / 2**30:.1f} GiB | {t.images_per_s:.1f} |" for t in timings]
    if fold_seconds:
        lines += ["", "| member | one fold on one device (train + validate + predict) |", "|---|---|"]
        lines += [f"| {k} | {hours(v)} |" for k, v in fold_seconds.items()]
    if frozen_rows:
        lines += ["", "Frozen-encoder members: every image embedded once under each TTA view (measured: images/s of "
                  "the encoder, random weights), then one classifier per fold (measured on random embeddings of the "
                  "real width, scaled to the sample count).", "",
                  "| member | embedding images/s (one view) | feature width | embed every image | classifiers, all "
                  "folds |", "|---|---|---|---|---|"]
        lines += [f"| {n} | {ips:.1f} | {w} | {hours(e)} | {hours(h)} |" for n, ips, w, e, h in frozen_rows]
    total = (f"**Whole recipe on {n} GPUs: DDP {hours(ddp)}, parallel folds {hours(par)}.** It will use {used}; "
             f"{better} is faster here." if n_gpus > 1 else f"**Whole recipe on one {dev}: {hours(ddp)}.**")
    lines += ["", total, "",
              f"Estimated, not measured: sample counts from the label tables and folds (oversampling included), "
              f"validation and prediction at a third of a training step per image (prediction scaled by pixels, "
              f"TTA {tta}), "
              + (f"DDP scaling efficiency {ddp_efficiency(n):.2f} on {n} GPUs, " if device.type == "cuda" else "")
              + "no data-loading stalls."]
    return "\n".join(lines) + "\n", timings
