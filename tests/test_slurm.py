"""A recipe on a real one-node SLURM cluster (tests/slurm_cluster.py): jobs, a preemption, a requeue
and the resumed run, against the local launcher's submission."""

import subprocess

import pytest
import yaml

from conftest import ROOT, private_copy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from slurm_cluster import Cluster, Unavailable

    try:
        c = Cluster(tmp_path_factory.mktemp("slurm")).start()
    except Unavailable as e:
        pytest.skip(f"no SLURM cluster here: {e}")
    yield c
    c.stop()


# duplicates grouped: the shipped recipes drop them, so the recipe's other mode runs here
TINY_RECIPE = {"n_folds": 2, "duplicates": "group", "tta": 1, "members": [
    {"arch": "tiny_cnn", "size": 32, "set": {"epochs": 30, "limit_batches": 2, "batch_size": 2, "crop": 24,
                                             "crop_large": 32, "workers": 0, "pretrained": "none", "grad_clip": 1.0,
                                             "amp": "off"}}]}


def test_a_recipe_on_slurm_survives_a_preemption_and_blends_as_locally(small_data, cluster, tmp_path):
    """`--launcher slurm` on a real one-node SLURM: every stage as jobs, one training task preempted
    mid-run (USR1 through scancel, as SLURM sends before a time limit), requeued, resumed; the same
    command again submits nothing new and waits; the submission equals the local launcher's. One small
    member on the small demo (the paper recipe's members run in test_recipe_smoke.py): the jobs, not
    the models, are tested."""
    import re
    import time

    from hpa.pipeline.recipe import load_recipe, run_recipe

    d = private_copy(small_data, tmp_path / "data")  # raw images and tables: the local run prepares them
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY_RECIPE))
    here = tmp_path / "tiny_local"
    run_recipe(load_recipe(str(recipe)), d, here, device="cpu", echo=lambda _: None)
    out = tmp_path / "slurm_work"
    cmd = ["bash", "run_all.sh", "--data-dir", str(d), "--recipe", str(recipe), "--device", "cpu", "--out-dir",
           str(out), "--launcher", "slurm", "--cpus-per-job", "1"]
    env = cluster.env
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    # a training array, a prediction job and the blend; the data are ready, so no data job
    assert "submitted 3 job" in r.stdout and "data" not in r.stdout.split("submitted")[1].split("\n")[0]
    # preempt the first training task once its stop handler is in place (it says so)
    deadline, victim = time.time() + 300, None
    while victim is None and time.time() < deadline:
        for log in sorted((out / "slurm").glob("*-train-*_*.log")):
            if "SIGUSR1 stops the run" in log.read_text():
                jobs = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%j|%T"], capture_output=True, text=True,
                                      env=env).stdout.splitlines()
                name, fold = log.stem.rsplit("_", 1)
                victim = next((j.split("|")[0] for j in jobs if j.split("|")[1] == name
                               and j.split("|")[0].endswith(f"_{fold}") and j.split("|")[2] == "RUNNING"), None)
                if victim:
                    break
        time.sleep(0.2)
    assert victim, "no training task was seen running"
    subprocess.run(["scancel", "--full", "--signal=USR1", victim], check=True, env=env)
    while "requeued SLURM job" not in log.read_text() and time.time() < deadline:  # its stop, then its requeue
        time.sleep(0.2)
    again = subprocess.run(cmd + ["--wait"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "nothing new to submit" in again.stdout and f"submission: {out / 'submission.csv'}" in again.stdout
    logs = "".join(p.read_text() for p in (out / "slurm").glob("*.log"))
    assert re.search(r"stopped by SIGUSR1 at (the end of )?epoch \d+(, step \d+)?: last.pt saved there; requeued "
                     "SLURM job", logs), logs[-2000:]
    assert logs.count("stopped by") == 1, logs[-3000:]  # the preempted task alone: its siblings ran on
    assert "resumed from" in logs
    assert (out / "submission.csv").read_bytes() == (here / "submission.csv").read_bytes()
    for p in (here / "predictions").glob("*.csv"):
        assert (out / "predictions" / p.name).read_bytes() == p.read_bytes(), p.name
