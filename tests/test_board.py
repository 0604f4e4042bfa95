"""TensorBoard events of a run, read back with TensorBoard's own reader and compared with log.csv,
including a run resumed after a crash between an epoch's events and its checkpoint."""

from __future__ import annotations

import pandas as pd
import pytest

from hpa.data.labels import CLASS_NAMES

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

SETTINGS = dict(epochs=3, batch_size=16, crop=24, crop_large=None, workers=0, amp="off", optimizer="adamw",
                lr=3e-3, loss="bce", hard_k=None, pretrained="none", cycle_epochs=None, cycles=1,
                lr_groups=[0.1, 1.0])


def read_events(run_dir):
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_events_match_log_csv_and_a_resumed_run_has_no_duplicate_steps(small_data, tmp_path, monkeypatch):
    import hpa.core.checkpoint
    import hpa.training.engine

    real_save = hpa.core.checkpoint.save_checkpoint

    def crash_at_epoch_2(path, state):  # the events of epoch 2 are written, its last.pt never is
        if path.name == "last.pt" and state["epoch"] == 2:
            raise KeyboardInterrupt
        real_save(path, state)

    monkeypatch.setattr(hpa.training.engine, "save_checkpoint", crash_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        hpa.train_fold("tiny_cnn", fold=0, size=32, data_dir=small_data, runs=tmp_path, echo=lambda _: None,
                       **SETTINGS)
    monkeypatch.setattr(hpa.training.engine, "save_checkpoint", real_save)
    run = hpa.train_fold("tiny_cnn", fold=0, size=32, data_dir=small_data, runs=tmp_path, echo=lambda _: None,
                         **SETTINGS)
    assert len(list(run.glob("events.out.tfevents.*"))) == 2  # the first session's file, then the resumed one's
    log = pd.read_csv(run / "log.csv")
    acc = read_events(run)
    columns = {"loss/train": "train_loss", "loss/val": "val_loss", "f1/macro_val": "val_macro_f1",
               "lr/group0": "lr_group0", "lr/group1": "lr_group1", "throughput/train_images_per_s":
               "train_images_per_s", "memory/peak_MiB": "peak_mem_mib",
               f"f1_class/05 {CLASS_NAMES[5]}": "f1_5", f"f1_class/27 {CLASS_NAMES[27]}": "f1_27"}
    for tag, col in columns.items():
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2, 3], tag  # epoch 2 once: the crashed session's copy is purged
        assert [e.value for e in events] == pytest.approx(log[col].tolist(), rel=1e-6), tag
    assert log["lr_group0"].tolist() == pytest.approx((log["lr_group1"] * 0.1).tolist())  # the groups' own LRs
    assert len([t for t in acc.Tags()["scalars"] if t.startswith("f1_class/")]) == 28
    images = [t for t in acc.Tags()["images"] if t.startswith("validation/")]
    assert images and [e.step for e in acc.Images(images[0])] == [1, 2, 3]
    assert "config" in " ".join(acc.Tags()["tensors"])  # the config as text
    plugins = acc.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in plugins and "_hparams_/session_start_info" in plugins


def test_a_session_started_in_the_same_second_sorts_after_the_earlier_ones(tmp_path):
    """TensorBoard reads a run's event files in name order; a file of the current second whose counter
    sorts high (".9" after ".10") must still come before the next session's file."""
    import os
    import socket
    import time

    from torch.utils.tensorboard import SummaryWriter

    from hpa.training.board import after_earlier_sessions

    # this host and process, and a counter no writer here reaches: only the second can order them
    earlier = tmp_path / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.99999"
    earlier.write_bytes(b"")
    after_earlier_sessions(tmp_path)
    w = SummaryWriter(log_dir=str(tmp_path))
    w.close()
    names = sorted(p.name for p in tmp_path.glob("events.out.tfevents.*"))
    assert names[0] == earlier.name and len(names) == 2
