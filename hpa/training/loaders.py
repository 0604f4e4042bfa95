"""The data one training run reads: the fold's oversampled training set and its validation set, as loaders."""

from __future__ import annotations

import contextlib
import functools
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from hpa.config import TrainConfig
from hpa.core.runtime import loader_processes
from hpa.data import layout
from hpa.data.dataset import HPADataset
from hpa.data.labels import labels_matrix, read_folds, read_label_tables
from hpa.data.provenance import data_provenance, dropped_note
from hpa.data.resolution import crop_side
from hpa.data.sampling import SideBatchSampler, class_counts_table, oversample_plan
from hpa.errors import ConfigError, RunError
from hpa.training.board import N_IMAGES
from hpa.training.stopping import StopRequest


@dataclass
class TrainData:
    train: DataLoader
    val: DataLoader
    val_part: list[int]  # this rank's indices into the validation set
    counts: pd.DataFrame  # per-class counts before and after oversampling
    sides: list[int]  # the stored sides of the training samples (a batch holds one)
    provenance: dict
    note: str  # what the run trains on, for its log
    board_images: torch.Tensor | None = None  # a few validation images for TensorBoard (main process)


def ignore_stop_signals(_: int) -> None:
    """DataLoader workers leave SIGTERM/SIGUSR1 to the main process, which stops at a step boundary
    (SLURM and `kill -- -PGID` signal every process of the job)."""
    for s in StopRequest.SIGNALS:
        signal.signal(s, signal.SIG_IGN)


@contextlib.contextmanager
def batches_of(loader: DataLoader):
    """The loader's iterator, whose worker processes are shut down on the way out, whatever happens:
    they ignore SIGTERM (ignore_stop_signals), so leaving them to the interpreter's exit, which
    terminates daemonic children with SIGTERM and then joins them, would hang it."""
    it = iter(loader)
    try:
        yield it
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)  # multi-process iterators only; idempotent
        if shutdown:
            shutdown()


def build_data(cfg: TrainConfig, rank: int = 0, world: int = 1) -> TrainData:
    if not cfg.data_dir:
        raise ConfigError("--data-dir: no dataset directory given (make the demo with input_prep/make_demo.py, "
                          "or see data/README.md)")
    data_dir = Path(cfg.data_dir)
    if not data_dir.is_dir():
        raise ConfigError(f"--data-dir {data_dir}: no such directory")
    tables = layout.label_tables(data_dir, cfg.external)
    labels = read_label_tables(tables)
    folds_csv = layout.folds_csv(data_dir, cfg.folds_csv)
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
    for split in layout.LABELLED_SPLITS[:len(tables)]:
        d = layout.prepared_dir(data_dir, cfg.size, split)
        if not d.is_dir():
            raise RunError(f"{d}: not prepared; run input_prep/prepare.py --data-dir {data_dir} --size {cfg.size}")
    store = np.array(layout.stores_of(data_dir, cfg.size, labels["table"]), dtype=object)
    train_ds = HPADataset(np.repeat(store[is_train], repeats).tolist(), np.repeat(ids[is_train], repeats).tolist(),
                          np.repeat(y[is_train], repeats, axis=0),
                          seed=cfg.seed, crop_for=functools.partial(crop_side, size=cfg.size, crop=cfg.crop,
                                                                    crop_large=cfg.crop_large))
    val_ds = HPADataset(store[is_val].tolist(), ids[is_val].tolist(), y[is_val])  # whole stored images
    if len(train_ds) < world or not len(val_ds):
        raise ConfigError(f"--fold {cfg.fold}: {len(train_ds)} training and {len(val_ds)} validation samples in "
                          f"{folds_csv}; each process needs at least one training sample and the fold one to validate")
    train_sides = train_ds.sides()
    sampler = SideBatchSampler(train_sides, cfg.batch_size, world, rank, shuffle=True, seed=cfg.seed)
    val_sampler = SideBatchSampler(val_ds.sides(), cfg.batch_size, world, rank, shuffle=False, drop_last=False)
    common = dict(persistent_workers=False, pin_memory=torch.cuda.is_available())
    train_dl = DataLoader(train_ds, batch_sampler=sampler, **common,
                          **loader_processes(cfg.workers, train_ds, ignore_stop_signals))
    val_part = [i for b in val_sampler for i in b]  # this rank's share of the validation set, in its order
    val_dl = DataLoader(val_ds, batch_sampler=val_sampler, **common,
                        **loader_processes(cfg.workers, val_ds, ignore_stop_signals))
    n_ext = int((labels["table"].to_numpy()[is_train] == 1).sum())
    note = (f"{int(is_train.sum())} training samples ({n_ext} HPAv18 external), {int(is_val.sum())} validation; "
            f"{int((fold < 0).sum())} left out by {folds_csv.name} (fold -1){dropped_note(folds_csv)}")
    prov = data_provenance(tables, folds_csv, ids[is_train].tolist(), ids[is_val].tolist())
    shown = [val_ds[i][0] for i in range(min(N_IMAGES, len(val_ds)))]
    shown = [x for x in shown if x.shape == shown[0].shape]  # one stored side, to stack
    return TrainData(train_dl, val_dl, val_part, counts, sorted(set(train_sides)), prov, note, torch.stack(shown))
