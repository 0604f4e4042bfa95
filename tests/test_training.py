"""Training behaviour: kill and resume, non-finite losses, configs."""

import json
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
import yaml
from scripts import run_script

from conftest import ROOT, private_copy
from hpa.config import TrainConfig, load_arch_config
from hpa.core.checkpoint import load_checkpoint
from hpa.errors import RunError
from hpa.training.rundir import guard_run_dir

pytestmark = pytest.mark.slow  # subprocess and end-to-end runs


@pytest.fixture(scope="module")
def data(tiny_demo, tmp_path_factory):
    d = private_copy(tiny_demo, tmp_path_factory.mktemp("training") / "data")
    if not (d / "prepared" / "64").is_dir():
        assert run_script("input_prep/prepare.py", "--data-dir", d, "--size", "64").returncode == 0
    if not (d / "folds.csv").is_file():
        assert run_script("input_prep/make_folds.py", "--labels", d / "train.csv", "--n-folds", "2",
                          "--out", d / "folds.csv").returncode == 0
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cmd(d, out, *extra):
    return ["train_fold.py", "--arch", "tiny_cnn", "--fold", "0", "--size", "64", "--data-dir", str(d),
            "--runs", str(out), "--epochs", "3", "--batch-size", "8", "--amp", "off", *map(str, extra)]


def train(d, out, *extra):
    return run_script(*cmd(d, out, *extra))


def test_sigkill_then_resume_matches_an_uninterrupted_run(data, tmp_path):
    ref = train(data, tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    run_dir = tmp_path / "killed" / "tiny_cnn_64" / "f0"
    p = subprocess.Popen([sys.executable, *cmd(data, tmp_path / "killed")], cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    seen = set()
    while p.poll() is None:  # wait for epoch 1 to be saved, checking every checkpoint that appears
        if (run_dir / "log.csv").is_file() and len(pd.read_csv(run_dir / "log.csv")) >= 1:
            time.sleep(0.2)  # into epoch 2
            p.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "training finished before it could be killed"
    for name in ("last.pt", "best.pt"):
        ck = load_checkpoint(run_dir / name)  # complete and loadable, never truncated
        seen.add(ck["epoch"])
    assert max(seen) < 3
    res = train(data, tmp_path / "killed", "--resume")
    assert res.returncode == 0, res.stderr
    a = pd.read_csv(tmp_path / "ref" / "tiny_cnn_64" / "f0" / "log.csv")
    b = pd.read_csv(run_dir / "log.csv")
    cols = ["train_loss", "val_loss", "val_macro_f1"]
    assert len(b) == 3 and list(b["epoch"]) == [1, 2, 3]
    # same seed, same data order and augmentations, restored random states: bit for bit on CPU
    assert a[cols].equals(b[cols])
    ka, kb = load_checkpoint(tmp_path / "ref" / "tiny_cnn_64" / "f0" / "last.pt"), load_checkpoint(run_dir / "last.pt")
    for k in ka["model"]:
        assert torch.equal(ka["model"][k], kb["model"][k]), k
    assert not list(run_dir.glob(".*.tmp"))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path):
    cfg = tmp_path / "explode.yaml"
    cfg.write_text(yaml.safe_dump({"optimizer": "sgd", "lr": 1.0e12, "lr_groups": [1.0, 1.0], "momentum": 0.0}))
    r = train(data, tmp_path, "--config", cfg, "--amp", "off")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "loss is nan" in r.stderr or "loss is inf" in r.stderr
    assert "last good checkpoint is kept" in r.stderr


def test_non_finite_loss_in_epoch_2_keeps_epoch_1s_checkpoint(data, tmp_path, monkeypatch):
    """The loss turns NaN after epoch 1 was saved: training stops, last.pt is epoch 1's and finite."""
    import hpa.training.engine as training

    real_step, calls = training.train_step, []

    def step(*a, **k):
        calls.append(1)
        if len(calls) > 3:  # epoch 1 runs 3 batches
            raise FloatingPointError("loss is nan")
        return real_step(*a, **k)

    monkeypatch.setattr(training, "train_step", step)
    cfg = load_arch_config("tiny_cnn", data_dir=str(data), size=64, epochs=3, batch_size=8, limit_batches=3,
                           workers=0)
    with pytest.raises(RunError, match="epoch 2, batch 0: loss is nan; stopping .the last good checkpoint is kept"):
        training.train(cfg, runs=tmp_path, echo=lambda _: None)
    ck = load_checkpoint(tmp_path / "tiny_cnn_64" / "f0" / "last.pt")
    assert ck["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_flags_override_config_and_merged_config_is_saved(data, tmp_path):
    r = train(data, tmp_path, "--lr", "0.0007", "--limit-batches", "2", "--epochs", "1")
    assert r.returncode == 0, r.stderr
    saved = yaml.safe_load((tmp_path / "tiny_cnn_64" / "f0" / "config.yaml").read_text())
    assert saved["lr"] == 0.0007 and saved["epochs"] == 1  # flags win
    assert saved["optimizer"] == "adamw" and saved["model"]["width"] == 16  # from configs/tiny_cnn.yaml
    assert saved["momentum"] == 0.9 and saved["oversample_max"] == 4  # TrainConfig's defaults
    counts = pd.read_csv(tmp_path / "tiny_cnn_64" / "f0" / "class_counts.csv")
    assert (counts["oversampled"] >= counts["count"]).all() and (counts["oversampled"] > counts["count"]).any()


def test_find_lr_writes_plot_and_feeds_the_run(data, tmp_path):
    r = train(data, tmp_path, "--find-lr", "use", "--find-lr-steps", 30, "--limit-batches", 3, "--epochs", "1")
    assert r.returncode == 0, r.stderr
    run_dir = tmp_path / "tiny_cnn_64" / "f0"
    import json

    res = json.loads((run_dir / "lr_find.json").read_text())
    assert (run_dir / "lr_find.png").is_file() and "chosen lr" in r.stdout
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["lr"] == pytest.approx(res["chosen_lr"])
    steps = pd.read_csv(run_dir / "lr_steps.csv")
    assert len(steps) == 3 and steps["lr"].iloc[0] == pytest.approx(res["chosen_lr"])
    assert (run_dir / "lr_schedule.png").is_file()


def test_torchrun_two_processes_match_one_process(data, tmp_path):
    """`--batch-size` is the effective batch: 2 gloo processes with batch 16 take 8 samples each of
    the batches of 1 process with batch 16, the same number of optimizer steps, and average the same
    gradients. GapNet-PL has no BatchNorm (whose statistics are per process on CPU, where
    SyncBatchNorm does not run) and dropout is off, so only float summation order differs."""
    cfg = tmp_path / "nodrop.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"dropout": 0.0, "extra_first_stage": 0}, "crop": None}))
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    common = ["--arch", "gapnet_pl", "--fold", "0", "--size", "64", "--data-dir", str(data), "--epochs", "2",
              "--config", str(cfg), "--amp", "off", "--lr", "0.01"]
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the two processes run (OMP_NUM_THREADS=1)
    try:
        one = run_script("train_fold.py", *common, "--batch-size", "16", "--runs", tmp_path / "one")
    finally:
        torch.set_num_threads(torch_threads)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(free_port()), "train_fold.py", *common, "--batch-size", "16", "--runs",
                          str(tmp_path / "two")],
                         cwd=ROOT, capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    a = pd.read_csv(tmp_path / "one" / "gapnet_pl_64" / "f0" / "log.csv")
    b = pd.read_csv(tmp_path / "two" / "gapnet_pl_64" / "f0" / "log.csv")
    assert list(b["epoch"]) == [1, 2]
    # TensorBoard events from rank 0 alone: one event file for two processes
    assert len(list((tmp_path / "two" / "gapnet_pl_64" / "f0").glob("events.out.tfevents.*"))) == 1
    steps = [len(pd.read_csv(tmp_path / r / "gapnet_pl_64" / "f0" / "lr_steps.csv")) for r in ("one", "two")]
    assert steps[0] == steps[1] > 0  # the same optimizer steps per epoch, so the same LR schedule
    saved = json.loads((tmp_path / "two" / "gapnet_pl_64" / "f0" / "provenance.json").read_text())
    assert saved["world_size"] == 2
    # stated tolerance: validation and training loss within 1e-3 relative, macro F1 within 0.01
    for col in ("val_loss", "train_loss"):
        assert ((a[col] - b[col]).abs() / a[col]).max() < 1e-3, (a[col], b[col])
    assert (a["val_macro_f1"] - b["val_macro_f1"]).abs().max() < 0.01
    assert two.stdout.count("best val macro F1") == 1  # only rank 0 reports and writes


def test_clear_errors_without_tracebacks(data, tmp_path):
    r = train(tmp_path / "nodata", tmp_path)
    assert r.returncode == 1 and "nodata: no such directory" in r.stderr and "Traceback" not in r.stderr
    r = train(data, tmp_path, "--pretrained", tmp_path / "missing.pth")
    assert r.returncode != 0 and "missing.pth: weights file not found" in r.stderr and "Traceback" not in r.stderr


def test_run_all_help_lists_the_options():
    """run_all.sh itself once (--help, through the shell wrapper, and a bad flag's exit code); the
    parser's other refusals in this process (the wrapper only forwards the arguments)."""
    from scripts import run_script

    r = subprocess.run(["bash", "run_all.sh", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0
    for opt in ("--data-dir", "--recipe", "--out-dir", "--n-folds", "--device", "--gpus", "--parallel-folds",
                "--smoke"):
        assert opt in r.stdout
    r = subprocess.run(["bash", "run_all.sh", "--bogus"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip() == "error: run_all.sh: unrecognized arguments: --bogus (see --help)"
    for opt in ("--recipe", "--data-dir", "--out-dir", "--gpus"):  # an option missing its value: one line
        for rest in ([], ["--smoke"]):
            r = run_script("-m", "hpa.cli.run_all", opt, *rest)
            assert r.returncode == 1 and r.stderr.strip() == \
                f"error: run_all.sh: argument {opt}: expected one argument (see --help)"


def test_guard_refuses_to_replace_a_run(tmp_path):
    cfg = TrainConfig(arch="tiny_cnn", data_dir="d", epochs=2)
    assert guard_run_dir(tmp_path, cfg, resume=False, overwrite=False) is None  # empty: start
    torch.save({"model": {}, "config": cfg.model_dump(), "epoch": 1}, tmp_path / "last.pt")
    with pytest.raises(RunError, match=r"partly trained run \(epoch 1 of 2\); --resume continues it"):
        guard_run_dir(tmp_path, cfg, resume=False, overwrite=False)
    assert guard_run_dir(tmp_path, cfg, resume=False, overwrite=True) is None
    assert guard_run_dir(tmp_path, cfg, resume=True, overwrite=False)["epoch"] == 1
    with pytest.raises(RunError, match=r"--resume with changed settings \(batch_size 32 -> 4\)"):
        guard_run_dir(tmp_path, cfg.model_copy(update={"batch_size": 4}), resume=True, overwrite=False)
