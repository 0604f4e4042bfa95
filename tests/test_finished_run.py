"""One definition of a finished run (hpa.data.layout.finished_run) for training and for SLURM, and the
window it closes: a stop between the last epoch's last.pt and its log."""

import pandas as pd

from hpa.config import load_arch_config
from hpa.data import layout
from hpa.pipeline.slurm import finished_folds
from hpa.training.engine import train

FAST = {"epochs": 2, "batch_size": 16, "crop": 24, "crop_large": None, "workers": 0, "pretrained": "none",
        "cycle_epochs": None, "cycles": 1, "loss": "bce", "hard_k": None, "amp": "off"}


class _Member:
    arch, size = "tiny_cnn", 32


def test_training_and_slurm_agree_on_a_finished_run(small_data, tmp_path):
    cfg = load_arch_config("tiny_cnn", fold=0, size=32, data_dir=str(small_data), **FAST)
    runs = tmp_path / "runs"
    run = train(cfg, runs=runs, device_name="cpu", echo=lambda _: None)
    log = layout.run_file(run, "log")
    assert layout.finished_run(run, 2) and finished_folds(runs, _Member, [0], 2) == [0]
    full = pd.read_csv(log)
    full.iloc[:1].to_csv(log, index=False)  # stopped after the last epoch's last.pt, before its log
    assert not layout.finished_run(run, 2) and finished_folds(runs, _Member, [0], 2) == []
    lines = []
    train(cfg, runs=runs, device_name="cpu", resume=True, echo=lines.append)
    assert any("already trained for 2 epochs" in line for line in lines)  # nothing retrained
    assert pd.read_csv(log).equals(full) and finished_folds(runs, _Member, [0], 2) == [0]


def test_a_preempted_array_task_requeues_itself_not_its_array():
    from hpa.training.stopping import slurm_job_to_requeue

    # SLURM gives an array's first task the array's own id as SLURM_JOB_ID (its siblings get new ids)
    first = {"SLURM_JOB_ID": "1", "SLURM_ARRAY_JOB_ID": "1", "SLURM_ARRAY_TASK_ID": "1"}
    assert slurm_job_to_requeue(first) == "1_1"
    assert slurm_job_to_requeue({**first, "SLURM_JOB_ID": "4", "SLURM_ARRAY_TASK_ID": "0"}) == "1_0"
    assert slurm_job_to_requeue({"SLURM_JOB_ID": "7"}) == "7"  # a plain batch job
    assert slurm_job_to_requeue({}) == ""
