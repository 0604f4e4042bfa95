"""TensorBoard events of a training run, written beside log.csv by the main process: per epoch the
losses, macro F1, per-class F1, the learning rate of each layer group, throughput and peak memory
(the same values as log.csv's row), the config as hyper-parameters, and a few validation images
with the class map of their most probable class. `tensorboard --logdir <runs>` then shows every
member and fold side by side (each run directory is one TensorBoard run).

The global step is the epoch. A resumed run opens the log with `purge_step` at the first epoch it
trains again, so events of an epoch that was logged but not checkpointed before a crash are
dropped by TensorBoard's reader instead of appearing twice.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from hpa.data.labels import CLASS_NAMES, NUM_CLASSES

EVENTS_GLOB = "events.out.tfevents.*"  # what SummaryWriter names its files
N_IMAGES = 4  # validation samples shown with their maps


def scalar_tags(row: dict) -> dict[str, float]:
    """log.csv's row as TensorBoard tags (the test reads them back under these names)."""
    tags = {"loss/train": row["train_loss"], "loss/val": row["val_loss"], "f1/macro_val": row["val_macro_f1"],
            "throughput/train_images_per_s": row["train_images_per_s"], "memory/peak_MiB": row["peak_mem_mib"]}
    tags |= {f"lr/group{g}": row[k] for g, k in enumerate(k for k in row if k.startswith("lr_group"))}
    tags |= {f"f1_class/{k:02d} {CLASS_NAMES[k]}": row[f"f1_{k}"] for k in range(NUM_CLASSES)}
    return {k: float(v) for k, v in tags.items()}


def _hparam_value(v):
    return v if isinstance(v, bool | int | float | str) else str(v)


def after_earlier_sessions(run_dir: Path) -> None:
    """Wait, if need be, until the clock is past the second of the run's newest event file.
    TensorBoard reads a run's files in name order, and a name is `...tfevents.<second>.<host>.<pid>.<n>`:
    a session resumed in the same second by the same process (a notebook retrying at once) could sort
    before the one whose steps its purge drops (".10" < ".9"), and the dropped steps come back."""
    fields = [p.name.split(".")[3] for p in Path(run_dir).glob(EVENTS_GLOB)]
    newest = max((int(f) for f in fields if f.isdigit()), default=None)
    if newest is not None and newest >= int(time.time()):
        time.sleep(newest + 1 - time.time())


class Board:
    def __init__(self, run_dir: Path, start_epoch: int, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        after_earlier_sessions(run_dir)
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=start_epoch if start_epoch > 1 else None)
        if start_epoch == 1:
            from torch.utils.tensorboard.summary import hparams

            hp = {k: _hparam_value(v) for k, v in config.items() if not isinstance(v, dict)}
            hp |= {f"model.{k}": _hparam_value(v) for k, v in (config.get("model") or {}).items()}
            for summary in hparams(hp, {"f1/macro_val": 0.0}):
                self.writer.file_writer.add_summary(summary)
            import yaml

            self.writer.add_text("config", "```\n" + yaml.safe_dump(config, sort_keys=False) + "```", 0)

    def epoch(self, row: dict) -> None:
        for tag, value in scalar_tags(row).items():
            self.writer.add_scalar(tag, value, row["epoch"])

    def images(self, epoch: int, model: torch.nn.Module, x: torch.Tensor) -> None:
        """Validation samples (N, 4, H, W in [0, 1]): the stain composite beside the overlay of the map
        of the class the model finds most probable."""
        import cv2

        from hpa.prediction.explain import composite, grad_cam, normalise, overlay

        x = x.to(next(model.parameters()).device)
        with torch.no_grad():
            top = torch.sigmoid(model.eval()(x.float())).argmax(1).tolist()
        for i, k in enumerate(top):
            cam = normalise(grad_cam(model, x[i:i + 1], [k])[0, 0].cpu().numpy())
            img = (x[i].permute(1, 2, 0).cpu().numpy() * 255).clip(0, 255).astype(np.uint8)
            rgb = composite(img)
            pair = np.concatenate([rgb, overlay(rgb, cam)], 1)
            if pair.shape[0] > 256:
                pair = cv2.resize(pair, (pair.shape[1] * 256 // pair.shape[0], 256), interpolation=cv2.INTER_AREA)
            self.writer.add_image(f"validation/sample{i}", pair, epoch, dataformats="HWC")
        # one tag per sample keeps a slider over epochs; which class each map shows is said here
        self.writer.add_text("validation/maps", "; ".join(f"sample{i}: {CLASS_NAMES[k]}" for i, k in enumerate(top)),
                             epoch)

    def close(self) -> None:
        self.writer.close()
