"""The paper recipe end to end on a real-layout dataset built from the real samples: Kaggle 512 px
PNGs, full-size 2048 and 3072 px images, HPAv18-style RGB JPEGs in external/, a near-duplicate
planted across train and external; every member of configs/recipes/paper.yaml with its real arch
at 1/12 size (`--smoke`), ImageNet weights from caches built here."""

import os
import subprocess

import cv2
import numpy as np
import pandas as pd
import pytest
import timm
import torch
import yaml
from safetensors.torch import save_file

from conftest import ROOT
from hpa.data.images import read_sample, write_sample_png
from hpa.data.labels import COLORS
from hpa.data.layout import stored_side

pytestmark = pytest.mark.slow


def write_hpav18_jpegs(directory, sid, img):
    """HPAv18 stores each stain as an RGB JPEG whose colour carries it (yellow = red + green)."""
    directory.mkdir(parents=True, exist_ok=True)
    for k, color in enumerate(COLORS):
        rgb = np.zeros(img.shape[:2] + (3,), np.uint8)
        planes = {"red": [0], "green": [1], "blue": [2], "yellow": [0, 1]}[color]
        for p in planes:
            rgb[:, :, p] = img[:, :, k]
        cv2.imwrite(str(directory / f"{sid}_{color}.jpg"), rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])


def build_dataset(real_samples, d):
    images, rows = real_samples
    by_size = {}
    for sid, target, size in rows:
        by_size.setdefault(size.split("x")[0], []).append((sid, target))
    s512, s2048, s3072 = by_size["512"][0], by_size["2048"], by_size["3072"][0]
    train = [s512, *s2048[:3], s3072]
    external = [(f"1000{k}_1_A{k}_1", t, read_sample(images, sid)) for k, (sid, t) in enumerate(s2048[3:5])]
    planted = ("99999_1_A1_1", train[1][1], read_sample(images, train[1][0]))  # a twin of a train sample
    for sid, _ in train:
        for c in COLORS:
            (d / "train").mkdir(parents=True, exist_ok=True)
            (d / "train" / f"{sid}_{c}.png").write_bytes((images / f"{sid}_{c}.png").read_bytes())
    for sid, _, img in [*external, planted]:
        write_hpav18_jpegs(d / "external", sid, img)
    test = [("test-2048", read_sample(images, s2048[5][0])), ("test-512", read_sample(images, s512[0]))]
    for sid, img in test:
        write_sample_png(d / "test", sid, img)
    pd.DataFrame(train, columns=["Id", "Target"]).to_csv(d / "train.csv", index=False)
    pd.DataFrame([(i, t) for i, t, _ in [*external, planted]], columns=["Id", "Target"]).to_csv(
        d / "external.csv", index=False)
    pd.DataFrame({"Id": [i for i, _ in test], "Predicted": "0"}).to_csv(d / "sample_submission.csv", index=False)
    return train, planted[0], s3072[0]


def build_caches(root) -> dict[str, str]:
    """Random 3-channel ImageNet-shaped weights of every paper arch, in the HF and torch hub caches."""
    recipe = yaml.safe_load((ROOT / "configs" / "recipes" / "paper.yaml").read_text())
    from hpa import models

    where = {}
    for arch in sorted({m["arch"] for m in recipe["members"]}):
        name = models.builder(arch).timm_name
        cfg = timm.models.get_pretrained_cfg(name)
        state = {k: v.contiguous() for k, v in timm.create_model(name, num_classes=1000).state_dict().items()}
        if cfg.hf_hub_id:
            repo = root / "hf" / f"models--{cfg.hf_hub_id.replace('/', '--')}"
            (repo / "refs").mkdir(parents=True)
            (repo / "refs" / "main").write_text("b" * 40)
            (repo / "snapshots" / ("b" * 40)).mkdir(parents=True)
            save_file(state, str(repo / "snapshots" / ("b" * 40) / "model.safetensors"))
            where[arch] = str(repo)
        else:
            target = root / "torch" / "hub" / "checkpoints" / cfg.url.rsplit("/", 1)[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.save(state, target)
            where[arch] = str(target)
    return where


@pytest.fixture(scope="module")
def smoke(real_samples, tmp_path_factory):
    """The paper recipe's smoke run with the local launcher (shared with the SLURM test, which must
    reproduce its submission)."""
    tmp_path = tmp_path_factory.mktemp("smoke")
    d = tmp_path / "hpa"
    train, planted, big = build_dataset(real_samples, d)
    where = build_caches(tmp_path / "cache")
    cache = tmp_path / "cache"
    env = {**os.environ, "HF_HUB_CACHE": str(cache / "hf"), "TORCH_HOME": str(cache / "torch"), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(["bash", "run_all.sh", "--data-dir", str(d), "--recipe", "paper", "--smoke", "--n-folds", "2",
                        "--device", "cpu", "--out-dir", str(tmp_path / "work")], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    return tmp_path, d, env, r, train, planted, big, where


def test_paper_recipe_smoke_on_real_layout_data(smoke):
    tmp_path, d, env, r, train, planted, big, where = smoke
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "Traceback" not in out
    sub = pd.read_csv(tmp_path / "work" / "submission.csv", dtype=str)
    assert sub["Id"].tolist() == ["test-2048", "test-512"]
    assert all(p.split() and all(0 <= int(v) < 28 for v in p.split()) for p in sub["Predicted"])
    recipe = yaml.safe_load((ROOT / "configs" / "recipes" / "paper.yaml").read_text())
    for m in recipe["members"]:
        small = round(m["size"] / 12)
        name = f"{m['arch']}_{small}"
        for f in (0, 1):
            assert (tmp_path / "work" / "runs" / name / f"f{f}" / "best.pt").is_file(), name
        assert (tmp_path / "work" / "predictions" / f"{name}_f1_oof.csv").is_file()
        assert where[m["arch"]] in out, f"{m['arch']}: weights not loaded from the test cache"
    # external samples were trained on, the planted twin was dropped, the 3072 px sample kept its side
    assert " HPAv18 external)" in out and " (0 HPAv18 external)" not in out
    dropped = pd.read_csv(d / "folds_dropped.csv")
    assert planted in set(dropped["Id"]) or train[1][0] in set(dropped["Id"])
    assert dropped["reason"].str.startswith("near-duplicate of").all()
    assert stored_side(d / "prepared" / "64" / "train" / f"{big}.npy") == 85  # 3072 -> 1024 scaled to the 64 run
    assert stored_side(d / "prepared" / "64" / "train" / f"{train[1][0]}.npy") == 64
    oof = pd.concat([pd.read_csv(p) for p in (tmp_path / "work" / "predictions").glob("se_resnext50_64_f*_oof.csv")])
    assert big in set(oof["Id"]) and {"10000_1_A0_1", "10001_1_A1_1"} <= set(oof["Id"])
    from hpa.core.digests import file_sha256
    from hpa.pipeline.recipe import Member, predictions_current

    for m in recipe["members"]:  # a re-run would skip every member's predictions
        assert predictions_current(Member(arch=m["arch"], size=round(m["size"] / 12)), tmp_path / "work" / "runs",
                                   tmp_path / "work" / "predictions", [0, 1], ("id",), "bf16",
                                   file_sha256(d / "folds.csv"))


def test_plan_times_every_member_and_projects_the_recipe(real_samples, tmp_path):
    """`run_all.sh --plan --smoke`: every member of the paper recipe timed at both stored sides on
    this CPU, and the whole recipe projected; nothing is trained."""
    d = tmp_path / "data"
    build_dataset(real_samples, d)
    r = subprocess.run(["bash", "run_all.sh", "--data-dir", str(d), "--recipe", "paper", "--smoke", "--plan",
                        "--out-dir", str(tmp_path / "work"), "--device", "cpu"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    plan = (tmp_path / "work" / "plan.md").read_text()
    recipe = yaml.safe_load((ROOT / "configs" / "recipes" / "paper.yaml").read_text())
    for m in recipe["members"]:
        small = round(m["size"] / 12)
        rows = [ln for ln in plan.splitlines() if ln.startswith(f"| {m['arch']}_{small} | ")]
        assert len(rows) == 3, m  # two stored sides, one fold projection
        assert float(rows[0].split("|")[-2]) > 0  # images/s
    assert "**Whole recipe on one CPU:" in plan and plan in r.stdout
    assert not (tmp_path / "work" / "runs").exists()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from slurm_cluster import Cluster, Unavailable

    try:
        c = Cluster(tmp_path_factory.mktemp("slurm")).start()
    except Unavailable as e:
        pytest.skip(f"no SLURM cluster here: {e}")
    yield c
    c.stop()


TINY_RECIPE = {"n_folds": 2, "duplicates": "drop", "tta": 1, "members": [
    {"arch": "tiny_cnn", "size": 64, "set": {"epochs": 30, "limit_batches": 2, "batch_size": 2, "crop": 48,
                                             "crop_large": 64, "workers": 0, "pretrained": "none", "grad_clip": 1.0,
                                             "amp": "off"}}]}


def test_a_recipe_on_slurm_survives_a_preemption_and_blends_as_locally(smoke, cluster):
    """`--launcher slurm` on a real one-node SLURM: every stage as jobs, one training task preempted
    mid-run (USR1 through scancel, as SLURM sends before a time limit), requeued, resumed; the same
    command again submits nothing new and waits; the submission equals the local launcher's. One small
    member (the paper recipe's six members, above, run locally): the jobs, not the models, are tested."""
    import re
    import time

    from hpa.pipeline.recipe import load_recipe, run_recipe

    tmp_path, d, env, local, *_ = smoke
    assert local.returncode == 0
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY_RECIPE))
    here = tmp_path / "tiny_local"
    run_recipe(load_recipe(str(recipe)), d, here, device="cpu", echo=lambda _: None)
    out = tmp_path / "slurm_work"
    cmd = ["bash", "run_all.sh", "--data-dir", str(d), "--recipe", str(recipe), "--device", "cpu", "--out-dir",
           str(out), "--launcher", "slurm", "--cpus-per-job", "1"]
    env = {**env, **cluster.env}
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
