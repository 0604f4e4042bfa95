"""Round 3 of "nothing silently wrong": the recipe never writes over a user's folds table, a signal to
run_all.sh reaches the recipe, no process contacts the network at start-up, and the settings and
flags a careless user gets wrong are one line where they enter."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

import hpa
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


SITE = textwrap.dedent('''
    import os, socket, sys
    LOG = os.environ["NET_LOG"]
    def hook(event, args):
        if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.sendto"):
            if event == "socket.connect" and getattr(args[0], "family", None) == socket.AF_UNIX:
                return
            with open(LOG, "a") as f:
                f.write(f"{sys.argv[:2]} {event} {args[1:]!r}\\n")
            raise OSError("network access blocked by the test")
    sys.addaudithook(hook)
''')


@pytest.mark.slow
def test_no_script_contacts_the_network_at_start_up(tmp_path, small_data):
    """Every script and module with an audit hook that records, and refuses, any network connection or
    name lookup: albumentations' release check (on every import) used to be one."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE)
    log = tmp_path / "net.log"
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "NET_LOG": str(log)}
    env.pop("NO_ALBUMENTATIONS_UPDATE", None)  # the toolkit must set it itself
    scripts = ["train_fold.py", "predict_tta.py", "find_thresholds.py", "blend.py", "ablate.py", "export_bundle.py",
               "embed.py", "input_prep/download.py", "input_prep/prepare.py", "input_prep/dedup.py",
               "input_prep/make_folds.py", "input_prep/make_demo.py"]
    # one interpreter for every module and every script's --help (each run as __main__), so the check costs
    # one start-up of torch; the training run below is the real start-up of a script that trains
    every = (f"import pkgutil, importlib, runpy, sys, hpa, input_prep\n"
             f"for m in pkgutil.walk_packages(hpa.__path__, 'hpa.'):\n"
             f"    if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
             f"import albumentations\n"
             f"for s in {scripts!r}:\n"
             f"    sys.argv = [s, '--help']\n"
             f"    try: runpy.run_path(s, run_name='__main__')\n"
             f"    except SystemExit as e: assert e.code in (0, None), (s, e.code)\n")
    commands = [["-c", every], ["train_fold.py", "--arch", "tiny_cnn", "--fold", "0", "--size", "32", "--data-dir",
                                str(small_data), "--runs", str(tmp_path / "runs"), "--epochs", "1", "--batch-size",
                                "16", "--crop", "24", "--workers", "0", "--amp", "off", "--limit-batches", "1"]]
    for cmd in commands:
        r = subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env, capture_output=True, text=True)
        assert r.returncode == 0, (cmd[:2], r.stderr[-1500:])
    assert not log.exists(), log.read_text()
    # the hook does catch a connection attempt (so its silence above means something)
    r = subprocess.run([sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 9), 1)"],
                       env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "socket." in log.read_text()


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


def test_api_settings_are_checked_where_they_enter(small_data, tmp_path):
    from hpa.errors import ConfigError

    preds = str(tmp_path / "none" / "*_oof.csv")
    cases = [
        (lambda: hpa.blend(preds, preds, data_dir=small_data, weights="max"), "weights='max': choose from"),
        (lambda: hpa.blend(preds, preds, data_dir=small_data, method="best"), "method='best': choose from"),
        (lambda: hpa.blend(preds, preds, data_dir=small_data, weigths="equal"), "hpa.blend\\(\\): .*weigths"),
        (lambda: hpa.predict("tiny_cnn", 32, [0], tta=9), "tta=9"),
        (lambda: hpa.predict("tiny_cnn", 32, [0], tta=0), "tta=0"),
        (lambda: hpa.predict("tiny_cnn", 32, [0], amp="fp8"), "amp='fp8'"),
        (lambda: hpa.predict("tiny_cnn", 32, 0), "folds=0: a list of fold numbers"),
        (lambda: hpa.predict("tiny_cnn", 32, []), "non-empty list"),
        (lambda: hpa.predict("tiny_cnn", 32, [0], sizes=[0]), "sizes=0"),
        (lambda: hpa.predict("tiny_cnn", 32, [0], batch_size=0), "batch_size=0"),
        (lambda: hpa.prepare(small_data, size=0), "size=0"),
        (lambda: hpa.make_folds(small_data, duplicates="bogus"), "duplicates='bogus'"),
        (lambda: hpa.fit_thresholds(preds, data_dir=small_data, method="best"), "method='best'"),
        (lambda: hpa.train_fold("tiny_cnn", fold=0, size=32, data_dir=small_data, runs=tmp_path, epocs=2),
         "epocs"),
    ]
    for call, words in cases:
        with pytest.raises(HPAError, match=words) as e:
            call()
        assert "\n" not in str(e.value), words
        assert isinstance(e.value, ConfigError) or "epocs" in words, words


def test_fit_thresholds_takes_one_table_as_a_str_or_a_path(small_data, tmp_path):
    runs = tmp_path / "runs"
    for f in (0, 1):
        hpa.train_fold("tiny_cnn", fold=f, size=32, data_dir=small_data, runs=runs, **FAST, **QUIET)
    hpa.predict("tiny_cnn", 32, [0, 1], runs=runs, out_dir=tmp_path / "p", tta=1, amp="off", device="cpu")
    oof = str(tmp_path / "p" / "tiny_cnn_32_f*_oof.csv")
    a = hpa.fit_thresholds(oof, labels=str(small_data / "train.csv"), method="exact")
    b = hpa.fit_thresholds(oof, labels=small_data / "train.csv", method="exact")
    c = hpa.fit_thresholds(oof, labels=[small_data / "train.csv"], method="exact")
    assert list(a.thresholds) == list(b.thresholds) == list(c.thresholds)


@pytest.mark.parametrize("bad", [7, -3])
def test_a_fold_number_outside_the_tables_folds_is_refused(small_data, tmp_path, bad):
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    folds = pd.read_csv(data / "folds.csv")
    folds.loc[3, "fold"] = bad
    folds.to_csv(data / "folds.csv", index=False)
    with pytest.raises(HPAError, match=f"row 5: fold {bad} is outside the table's folds"):
        hpa.train_fold("tiny_cnn", fold=0, size=32, data_dir=data, runs=tmp_path / "r", **FAST, **QUIET)


def test_own_images_keep_their_proportions_sub_folders_are_listed_and_out_may_sit_in_the_folder(small_data, tmp_path):
    import numpy as np
    import torch

    from hpa.data.images import read_sample, write_sample_png
    from hpa.prediction.ensemble import from_runs
    from hpa.prediction.folder import predict_folder
    from hpa.prediction.inference import DIHEDRAL, ImageSet, PredictOptions

    runs = tmp_path / "runs"
    hpa.train_fold("tiny_cnn", fold=0, size=32, data_dir=small_data, runs=runs, **FAST, **QUIET)
    images = tmp_path / "images"
    images.mkdir()
    sid = pd.read_csv(small_data / "sample_submission.csv")["Id"][0]
    img = read_sample(small_data / "test", sid)
    wide = np.concatenate([img, img], 1)  # 32 x 64: two fields side by side
    write_sample_png(images, "wide", wide)
    (images / "more").mkdir()
    write_sample_png(images / "more", "inner", img)
    x, _, _ = ImageSet(["wide"], 32, raw_dir=images)[0]
    # padded to 64 x 64 (black above and below), then resized to 32: the cells keep their proportions
    want = np.zeros((64, 64, 4), np.uint8)
    want[16:48] = wide
    import cv2

    want = cv2.resize(want, (32, 32), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy() * 255, want, atol=0.51)
    ens = from_runs(runs, "tiny_cnn", 32, [0], torch.device("cpu"), PredictOptions(DIHEDRAL[:1], amp="off"))
    out = images / "preds.csv"  # --out inside the image folder: a re-run is not refused
    for _ in range(2):
        r = predict_folder(ens, images, out, opts=PredictOptions(device="cpu"), report=False, **QUIET)
    assert r.n_predicted == 1 and "more/" in r.skipped and "not searched" in r.skipped["more/"]


def test_a_write_error_names_the_users_path_not_a_temporary_file(tmp_path, monkeypatch):
    """A directory the user cannot write to (simulated: the tests run as root, who can write anywhere):
    creating the temporary file, or renaming it into place, fails with the user's path in the line."""
    import errno
    import tempfile

    from hpa.core.atomic import atomic_outputs, atomic_write_text

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".out.csv.x1y2.tmp"))

    with monkeypatch.context() as m:
        m.setattr(tempfile, "mkstemp", denied)
        with pytest.raises(HPAError, match=r"out.csv: cannot be written \(Permission denied in ") as e:
            atomic_write_text(tmp_path / "out.csv", "x")
        assert ".tmp" not in str(e.value)
    real_replace = os.replace

    def replace_denied(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", str(src), str(dst))

    monkeypatch.setattr(os, "replace", replace_denied)
    with pytest.raises(HPAError, match=r"a.csv: cannot be written \(Permission denied\)") as e:
        with atomic_outputs() as tmp:
            tmp(tmp_path / "a.csv").write_text("x")
    assert ".tmp" not in str(e.value)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not list(tmp_path.glob(".*.tmp*"))  # nothing left behind


def test_runs_resume_and_predict_from_anywhere_and_a_lost_best_pt_names_a_way_out(small_data, tmp_path, monkeypatch):
    from hpa.core.checkpoint import load_checkpoint

    runs = tmp_path / "runs"
    monkeypatch.chdir(small_data.parent)
    run = hpa.train_fold("tiny_cnn", fold=0, size=32, data_dir=small_data.name, runs=runs, **FAST, **QUIET)
    assert load_checkpoint(run / "best.pt")["config"]["data_dir"] == str(small_data)  # saved absolute
    monkeypatch.chdir(tmp_path)  # elsewhere: the run still finds its labels
    assert hpa.predict("tiny_cnn", 32, [0], runs=runs, out_dir=tmp_path / "p", tta=1, amp="off", device="cpu")
    (run / "best.pt").unlink()
    with pytest.raises(HPAError, match="finished training .1 epochs. but its best.pt is gone; restore it, or train"):
        hpa.train_fold("tiny_cnn", fold=0, size=32, data_dir=small_data, runs=runs, **FAST, **QUIET)
    last = run / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a copy cut short
    with pytest.raises(HPAError, match=r"cannot be read as a checkpoint: it is cut short .*\); delete it to train "
                                       r"this fold from the start") as e:
        hpa.train_fold("tiny_cnn", fold=0, size=32, data_dir=small_data, runs=runs, **FAST, **QUIET)
    assert str(e.value).endswith(")") and "\n" not in str(e.value)


def fake_slurm(tmp_path: Path, monkeypatch, sinfo: str, squeue: str) -> Path:
    """sinfo, squeue and sbatch as scripts on PATH printing what a one-node cluster would (sbatch
    records its calls): the SLURM client side of hpa.pipeline.slurm without a cluster."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "sinfo").write_text(f"#!/bin/sh\ncat <<'OUT'\n{sinfo}\nOUT\n")
    # squeue's -o: id|name|state, with |reason when %r is asked for
    (bin_dir / "squeue").write_text(f"#!/bin/sh\ncase \"$*\" in *%r*) cut='1-4' ;; *) cut='1-3' ;; esac\n"
                                    f"[ -n '{squeue}' ] && printf '%s\\n' '{squeue}' | cut -d'|' -f$cut\nexit 0\n")
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'sbatch.calls'}\necho 41\n")
    for p in bin_dir.iterdir():
        p.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "sbatch.calls"


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
    with dir_lock(tmp_path / "w", "recipe output directory"):  # a live recipe there
        with pytest.raises(HPAError, match="in use by process"):
            plan_recipe(recipe, small_data, tmp_path / "w", device="cpu", **QUIET)


def test_exports_and_reports_never_delete_a_folder_they_did_not_make(tmp_path):
    import numpy as np

    from hpa.errors import BundleError
    from hpa.prediction.bundle import write_bundle
    from hpa.prediction.ensemble import Ensemble
    from hpa.prediction.folder import check_report_assets

    precious = tmp_path / "work"
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")
    ens = Ensemble([], "equal", np.ones(0), np.full(28, 0.5))
    with pytest.raises(BundleError, match="exists and is not an hpa-toolkit bundle"):
        write_bundle(ens, precious, training_data={}, summary={})
    assert (precious / "notes.txt").read_text() == "mine"
    (precious / "report_files").mkdir()
    (precious / "report_files" / "thesis.docx").write_text("mine")
    with pytest.raises(HPAError, match="holds files that are not report images"):
        check_report_assets(precious / "report_files")


def test_own_image_output_never_replaces_the_thresholds_it_read(small_data, tmp_path):
    """predict_tta.py --images --out on the --thresholds file: refused before any work, file kept."""
    import importlib.util

    runs = tmp_path / "runs"
    hpa.train_fold("tiny_cnn", fold=0, size=32, data_dir=small_data, runs=runs, **FAST, **QUIET)
    thr = tmp_path / "thr.json"
    thr.write_text(json.dumps({"thresholds": [0.5] * 28}))
    before = thr.read_bytes()
    spec = importlib.util.spec_from_file_location("predict_tta", ROOT / "predict_tta.py")
    predict_tta = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(predict_tta)
    with pytest.raises(HPAError, match="thr.json: is an input .thresholds. and would be overwritten"):
        predict_tta.main(["--arch", "tiny_cnn", "--size", "32", "--runs", str(runs), "--images",
                          str(small_data / "test"), "--thresholds", str(thr), "--out", str(thr), "--device", "cpu"])
    assert thr.read_bytes() == before
