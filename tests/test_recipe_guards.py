"""The recipe and its launchers guard the user: never over a user's folds table, a signal to run_all.sh
reaches the recipe, SLURM requests no node can hold are refused before submitting, --n-folds below 2
is refused, and the plan reports what training will do."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

import hpa
from conftest import fake_slurm
from hpa.errors import HPAError

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(echo=lambda _: None)
FAST = {"epochs": 1, "batch_size": 16, "crop": 24, "crop_large": None, "workers": 0, "pretrained": "none",
        "cycle_epochs": None, "cycles": 1, "loss": "bce", "hard_k": None, "amp": "off"}



def test_the_recipe_never_writes_over_a_users_folds_table(small_data, tmp_path):
    from hpa.pipeline.recipe import Member, Recipe, RecipeRequest, run_recipe, run_stage

    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    hpa.make_folds(data, n_folds=3, **QUIET)  # the user's own 3-fold table
    before = (data / "folds.csv").read_bytes()
    recipe = Recipe(n_folds=2, duplicates="ignore", tta=1, members=[Member(arch="tiny_cnn", size=32, set=FAST)])
    with pytest.raises(HPAError, match="holds other folds than this recipe makes .2 folds") as e:
        run_recipe(recipe, data, tmp_path / "work", device="cpu", **QUIET)
    assert "folds.csv" in str(e.value) and "\n" not in str(e.value)
    assert (data / "folds.csv").read_bytes() == before
    assert not list(data.glob(".recipe_folds.*"))  # its scratch copy is gone
    # the recipe's own table, made before, is kept and reused
    (data / "folds.csv").unlink()
    hpa.make_folds(data, n_folds=2, duplicates="ignore", **QUIET)
    same = (data / "folds.csv").read_bytes()
    lines = []  # the data stage alone (prepare, dedup, folds): what decides about the table
    run_stage(RecipeRequest(data_dir=data, out_dir=tmp_path / "work", device="cpu", stage="data"), recipe,
              echo=lines.append)
    assert (data / "folds.csv").read_bytes() == same
    assert any("already holds this recipe's folds" in ln for ln in lines)


@pytest.mark.slow
def test_a_signal_to_run_all_reaches_the_recipe_which_stops_with_last_pt_saved(small_data, tmp_path):
    recipe = tmp_path / "long.yaml"
    recipe.write_text(json.dumps({"n_folds": 2, "duplicates": "ignore", "tta": 1, "members": [
        {"arch": "tiny_cnn", "size": 32, "set": {**FAST, "epochs": 60}}]}))
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    (data / "folds.csv").unlink()
    cmd = ["bash", "run_all.sh", "--data-dir", str(data), "--recipe", str(recipe), "--out-dir", str(tmp_path / "w"),
           "--device", "cpu"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    lines = []
    for line in p.stdout:
        lines.append(line)
        if "epoch 2/60" in line:
            break
    child = next(int(ln.split("process ")[1].split(":")[0]) for ln in lines if "SIGTERM or SIGUSR1" in ln)
    os.kill(p.pid, signal.SIGTERM)  # the script, not its process group
    rest = p.stdout.read()
    p.wait(timeout=120)
    assert p.returncode != 0
    assert "stopped: " in rest and "last.pt saved" in rest, rest[-2000:]
    for _ in range(50):  # the recipe is gone too: no orphan training on and holding the lock
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the recipe (pid {child}) outlived run_all.sh")
    log = pd.read_csv(tmp_path / "w" / "runs" / "tiny_cnn_32" / "f0" / "log.csv")
    assert 2 <= len(log) < 60
    from hpa.core.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "w" / "runs" / "tiny_cnn_32" / "f0" / "last.pt")["epoch"] >= 2  # resumable


def test_slurm_requests_no_node_can_hold_are_refused_before_submitting(tmp_path, monkeypatch):
    from hpa.pipeline.slurm import SlurmOptions, check_fits

    calls = fake_slurm(tmp_path, monkeypatch, "debug*|2|20000|(null)\ngpu|32|512000|gpu:a100:4", "")
    for opts, words in [(SlurmOptions(cpus_per_job=4), "--cpus-per-job 4: no node of partition debug has more "
                                                        "than 2 CPUs"),
                        (SlurmOptions(cpus_per_job=2, mem="64G"), "--mem 64G: no node of partition debug"),
                        (SlurmOptions(cpus_per_job=2, gpus_per_job=1), "partition debug has no GPUs"),
                        (SlurmOptions(partition="big"), "--partition big: not a partition of this cluster "
                                                        "\\(debug, gpu\\)")]:
        with pytest.raises(HPAError, match=words):
            check_fits(opts)
    check_fits(SlurmOptions(cpus_per_job=2, mem="16000"))
    check_fits(SlurmOptions(partition="gpu", cpus_per_job=8, gpus_per_job=1, mem="64G"))
    assert not calls.exists()


def test_slurm_wait_names_a_job_that_can_never_start(tmp_path, monkeypatch):
    from hpa.pipeline.slurm import Launcher, SlurmOptions

    launcher = Launcher(tmp_path / "w", SlurmOptions(), lambda stage: ["true"], **QUIET)
    name = launcher.name("data")
    fake_slurm(tmp_path, monkeypatch, "debug*|2|20000|(null)", f"57|{name}|PENDING|PartitionConfig")
    with pytest.raises(HPAError, match=f"SLURM job 57 \\({name}\\) can never start: PartitionConfig .*lower "
                                       "--cpus-per-job"):
        launcher.wait(poll_s=0)
    # a job merely waiting for resources is waited for
    fake_slurm(tmp_path, monkeypatch, "debug*|2|20000|(null)", f"57|{name}|PENDING|Resources")
    assert launcher.never_starting() is None


def test_a_refused_slurm_launch_writes_nothing(small_data, tmp_path, monkeypatch):
    """--n-folds with --launcher slurm writes <out-dir>/recipe.yaml for the jobs, but only once every
    check has passed and inside the lock."""
    from hpa.cli import run_all as rec

    fake_slurm(tmp_path, monkeypatch, "debug*|2|20000|(null)", "")
    out = tmp_path / "w"
    with pytest.raises(HPAError, match="--cpus-per-job 4"):
        rec.main(["--recipe", "demo", "--data-dir", str(small_data), "--out-dir", str(out), "--launcher", "slurm",
                  "--n-folds", "3"])
    assert not out.exists()
    with pytest.raises(HPAError, match="train.csv not found"):
        rec.main(["--recipe", "demo", "--data-dir", str(tmp_path / "nothing"), "--out-dir", str(out), "--launcher",
                  "slurm", "--n-folds", "3", "--cpus-per-job", "2"])
    assert not out.exists()


@pytest.mark.parametrize("n", ["0", "1"])
def test_n_folds_below_two_is_refused_not_ignored(small_data, tmp_path, n):
    from hpa.cli import run_all as rec

    with pytest.raises(HPAError, match=f"--n-folds {n}: .*greater than or equal to 2"):
        rec.main(["--recipe", "demo", "--data-dir", str(small_data), "--out-dir", str(tmp_path / "w"), "--plan",
                  "--n-folds", n])


def test_the_plan_reports_what_training_will_do(small_data, tmp_path, monkeypatch):
    from hpa.core.locks import dir_lock
    from hpa.data.layout import lock_file
    from hpa.pipeline import plan
    from hpa.pipeline.recipe import Member, Recipe, plan_recipe

    seen = []
    real = plan.timed_steps

    def spy(cfg, device, side, steps=2):
        micro, ips, peak = real(cfg, device, side, steps=1)
        seen.append((side, micro))
        return micro, ips, peak

    monkeypatch.setattr(plan, "timed_steps", spy)
    # a training set of a million samples, so that whole epochs and limited ones differ in the plan
    monkeypatch.setattr(plan, "training_samples", lambda cfg, n_folds: (1e6, 100, 100))
    member = Member(arch="tiny_cnn", size=32, set={**FAST, "batch_size": 16, "micro_batches": {32: 4, 43: 4}})
    recipe = Recipe(n_folds=2, duplicates="ignore", tta=1, members=[member])
    path = plan_recipe(recipe, small_data, tmp_path / "w", device="cpu", **QUIET)
    text = path.read_text()
    assert (32, 4) in seen and "| tiny_cnn_32 | 32 | 24 | 100% | 4 x 4 |" in text  # the member's own map
    # with limit_batches (as --smoke sets), an epoch is that many batches, not the whole training set
    limited = Recipe(n_folds=2, duplicates="ignore", tta=1, members=[
        member.model_copy(update={"set": {**member.set, "limit_batches": 1}})])
    fold = lambda t: t.split("| tiny_cnn_32 | ")[-1].split(" |")[0]  # noqa: E731
    short = plan_recipe(limited, small_data, tmp_path / "w2", device="cpu", **QUIET).read_text()
    assert fold(short) != fold(text)
    with dir_lock(lock_file(tmp_path / "w"), "recipe output directory"):  # a live recipe there
        with pytest.raises(HPAError, match="in use by process"):
            plan_recipe(recipe, small_data, tmp_path / "w", device="cpu", **QUIET)
