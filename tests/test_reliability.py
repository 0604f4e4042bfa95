"""An unattended run as a user meets it: interruptions before the first checkpoint, two processes on
one directory, outputs named like inputs, stale or mismatched predictions, a dataset that moves, bad
images in a folder, a full disk. Subprocesses where the user would run a command."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from scripts import run_script

from conftest import ROOT, assert_one_line_error
from hpa.core.locks import dir_lock
from hpa.data.layout import lock_file
from hpa.errors import DiskFullError, LockedError

TRAIN = ["--arch", "tiny_cnn", "--size", 64, "--epochs", 2, "--batch-size", 8, "--workers", 0, "--amp", "off"]
KILL = [*TRAIN, "--limit-batches", 30]


def run(*args, cwd=ROOT):
    return run_script(*args, cwd=cwd)


def digest(d: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(d).iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def data(tiny_demo, tmp_path_factory):
    d = tmp_path_factory.mktemp("reliable") / "data"
    shutil.copytree(tiny_demo, d, ignore=shutil.ignore_patterns("prepared", "folds*", "dedup"))
    assert run("input_prep/prepare.py", "--data-dir", d, "--size", 64, "--workers", 1).returncode == 0
    assert run("input_prep/make_folds.py", "--labels", d / "train.csv", "--n-folds", 2, "--out",
               d / "folds.csv").returncode == 0
    return d


@pytest.fixture(scope="module")
def predicted(data, tmp_path_factory):
    """Two trained folds (1 short epoch) and their predictions."""
    root = tmp_path_factory.mktemp("predicted")
    for f in (0, 1):
        r = run("train_fold.py", *TRAIN, "--fold", f, "--data-dir", data, "--runs", root / "runs", "--epochs", 1,
                "--limit-batches", 2)
        assert r.returncode == 0, r.stderr[-2000:]
    r = run("predict_tta.py", "--arch", "tiny_cnn", "--size", 64, "--folds", 0, 1, "--tta", 1, "--runs",
            root / "runs", "--out-dir", root / "preds", "--workers", 0)
    assert r.returncode == 0, r.stderr[-2000:]
    return root


# ---- 1. interrupted before the first checkpoint ----------------------------------------------

@pytest.mark.slow
def test_kill_before_the_first_checkpoint_then_resume_equals_an_uninterrupted_run(data, tmp_path):
    # 30 batches an epoch: the kill lands within milliseconds of provenance.json, long before epoch 1 ends
    ref = run("train_fold.py", *KILL, "--fold", 0, "--data-dir", data, "--runs", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-2000:]
    run_dir = tmp_path / "killed" / "tiny_cnn_64" / "f0"
    p = subprocess.Popen([sys.executable, "train_fold.py", *map(str, KILL), "--fold", "0", "--data-dir", str(data),
                          "--runs", str(tmp_path / "killed"), "--batch-size", "2"], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run_dir / "provenance.json").is_file() and time.time() < deadline:
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)  # as an OOM kill or a preemption would, before epoch 1 ends
    p.wait()
    assert (run_dir / "config.yaml").is_file() and not (run_dir / "last.pt").exists()
    again = run("train_fold.py", *KILL, "--fold", 0, "--data-dir", data, "--runs", tmp_path / "killed", "--resume",
                "--batch-size", 2)
    assert again.returncode == 0, again.stderr[-2000:]
    # the same re-run on the reference settings (batch 8) is refused: that directory started with batch 2
    shutil.rmtree(run_dir)
    p = subprocess.Popen([sys.executable, "train_fold.py", *map(str, KILL), "--fold", "0", "--data-dir", str(data),
                          "--runs", str(tmp_path / "killed")], cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    while not (run_dir / "provenance.json").is_file() and time.time() < deadline:
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert_one_line_error(run("train_fold.py", *KILL, "--fold", 0, "--data-dir", data, "--runs", tmp_path / "killed",
                       "--resume", "--lr", 0.5), "was started with other settings", "lr 0.003 -> 0.5",
                   "holds no checkpoint", "--overwrite")
    done = run("train_fold.py", *KILL, "--fold", 0, "--data-dir", data, "--runs", tmp_path / "killed", "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    a = torch.load(tmp_path / "ref" / "tiny_cnn_64" / "f0" / "last.pt", weights_only=True)
    b = torch.load(run_dir / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["history"][-1]["val_macro_f1"] == b["history"][-1]["val_macro_f1"]


# ---- 2. two processes on one directory -------------------------------------------------------

def test_a_directory_lock_names_its_holder_and_is_taken_over_from_a_dead_one(tmp_path):
    lock = lock_file(tmp_path)
    with dir_lock(lock, "run directory"):
        with pytest.raises(LockedError, match=f"run directory in use by process {os.getpid()} on host "
                                              f"{socket.gethostname()}"):
            with dir_lock(lock, "run directory"):
                pass
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from hpa.core.locks import dir_lock\n"
                               f"with dir_lock({str(lock)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LockedError, match=f"process {holder.pid} on host"):
        with dir_lock(lock):
            pass
    holder.send_signal(signal.SIGKILL)  # dies holding it: the kernel releases the flock
    holder.wait()
    with dir_lock(lock):
        assert lock.read_text().split()[0] == str(os.getpid())


@pytest.mark.slow
def test_a_second_training_on_the_same_run_directory_stops_with_one_line(data, tmp_path):
    lock = lock_file(tmp_path / "runs" / "tiny_cnn_64" / "f0")
    holder = subprocess.Popen([sys.executable, "-c", "import time; from hpa.core.locks import dir_lock\n"
                               f"with dir_lock({str(lock)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    r = run("train_fold.py", *TRAIN, "--fold", 0, "--data-dir", data, "--runs", tmp_path / "runs", "--overwrite")
    assert_one_line_error(r, f"in use by process {holder.pid} on host {socket.gethostname()}")
    holder.kill()
    holder.wait()
    r = run("train_fold.py", *TRAIN, "--fold", 0, "--data-dir", data, "--runs", tmp_path / "runs", "--epochs", 1,
            "--limit-batches", 1)
    assert r.returncode == 0, r.stderr[-2000:]


# ---- 3. outputs never replace inputs ---------------------------------------------------------

@pytest.mark.slow
def test_outputs_named_like_inputs_are_refused_before_any_work(data, predicted):
    preds = predicted / "preds"
    before = digest(preds), digest(data)
    oof = [preds / f"tiny_cnn_64_f{f}_oof.csv" for f in (0, 1)]
    fit = ["find_thresholds.py", "--oof", *oof, "--labels", data / "train.csv"]
    assert_one_line_error(run(*fit, "--out", oof[0]), str(oof[0]), "input (OOF prediction)", "thresholds JSON (--out)")
    assert_one_line_error(run(*fit, "--out", preds / "tiny_cnn_64_f1_oof.json"), "input (OOF prediction)")
    assert_one_line_error(run(*fit, "--out", predicted / "thr.csv"), "written twice", "thresholds JSON (--out)",
                   "per-class table")
    blend = ["blend.py", "--oof", str(preds / "*_oof.csv"), "--test", str(preds / "*_test.csv"), "--data-dir", data]
    assert_one_line_error(run(*blend, "--out", data / "sample_submission.csv"), "input (sample submission)",
                   "submission (--out)")
    assert_one_line_error(run(*blend, "--out", preds / "tiny_cnn_64_f0_test.csv"), "input (test prediction)")
    assert_one_line_error(run(*blend, "--out", predicted / "report.md"), "written twice", "report")
    assert (digest(preds), digest(data)) == before


# ---- 4. stale or mismatched predictions ------------------------------------------------------

@pytest.mark.slow
def test_test_files_of_other_checkpoints_or_tta_are_never_blended(data, predicted, tmp_path):
    preds = tmp_path / "preds"
    shutil.copytree(predicted / "preds", preds)
    other = tmp_path / "tta2"
    r = run("predict_tta.py", "--arch", "tiny_cnn", "--size", 64, "--folds", 1, "--tta", 2, "--runs",
            predicted / "runs", "--out-dir", other, "--workers", 0)
    assert r.returncode == 0, r.stderr[-2000:]
    for suffix in (".csv", ".json"):  # fold 1's test file now comes from TTA 2, its OOF file from TTA 1
        shutil.copy(other / f"tiny_cnn_64_f1_test{suffix}", preds / f"tiny_cnn_64_f1_test{suffix}")
    blend = ["blend.py", "--oof", str(preds / "*_oof.csv"), "--test", str(preds / "*_test.csv"), "--data-dir", data,
             "--out", tmp_path / "sub.csv"]
    assert_one_line_error(run(*blend), "tiny_cnn_64_f1_test.csv", "tta",
                          "predict the model's OOF and test files together")
    (preds / "tiny_cnn_64_f1_test.json").unlink()
    assert_one_line_error(run(*blend), "tiny_cnn_64_f1_test.csv: has no provenance sidecar")
    assert not (tmp_path / "sub.csv").exists()


# ---- 5. a dataset that moves -----------------------------------------------------------------

@pytest.mark.slow
def test_a_moved_dataset_still_predicts_and_blends(data, predicted, tmp_path):
    moved = tmp_path / "renamed"
    shutil.copytree(data, moved)
    r = run("predict_tta.py", "--arch", "tiny_cnn", "--size", 64, "--folds", 0, 1, "--tta", 1, "--runs",
            predicted / "runs", "--out-dir", tmp_path / "preds", "--workers", 0, "--data-dir", moved)
    assert r.returncode == 0, r.stderr[-2000:]
    for preds in (predicted / "preds", tmp_path / "preds"):  # sidecars made before and after the move
        r = run("blend.py", "--oof", str(preds / "*_oof.csv"), "--test", str(preds / "*_test.csv"), "--data-dir",
                moved, "--out", tmp_path / preds.name / "submission.csv", "--method", "flat", "--weights", "equal")
        assert r.returncode == 0, r.stderr[-2000:]
    # relative paths are the caller's: one line with the absolute path looked at
    r = run(ROOT / "predict_tta.py", "--arch", "tiny_cnn", "--size", 64, "--folds", 0, "--runs", "nowhere",
            cwd=tmp_path)
    assert_one_line_error(r, str(tmp_path / "nowhere" / "tiny_cnn_64" / "f0" / "best.pt"))


# ---- 6. one bad image does not sink a folder -------------------------------------------------

@pytest.mark.slow
def test_bad_samples_in_an_image_folder_are_listed_and_skipped(data, predicted, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    good = sorted(p.name.removesuffix("_red.png") for p in (data / "test").glob("*_red.png"))[:3]
    for sid in good:
        for c in ("red", "green", "blue", "yellow"):
            shutil.copy(data / "test" / f"{sid}_{c}.png", images / f"{sid}_{c}.png")
    for c in ("green", "blue", "yellow"):
        shutil.copy(data / "test" / f"{good[0]}_{c}.png", images / f"empty_{c}.png")
    (images / "empty_red.png").write_bytes(b"")
    ids = tmp_path / "ids.csv"
    ids.write_text("Id\n" + "\n".join([*good, "empty", "absent"]) + "\n")
    common = ["predict_tta.py", "--arch", "tiny_cnn", "--size", 64, "--folds", 0, 1, "--tta", 1, "--runs",
              predicted / "runs", "--workers", 0, "--images", images, "--out", tmp_path / "mine.csv"]
    r = run(*common, "--ids", ids)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "skipped empty: " in r.stdout and "empty_red.png: empty file (0 bytes)" in r.stdout
    assert "skipped absent: " in r.stdout and "absent_red.png: channel file not found" in r.stdout
    import pandas as pd

    assert pd.read_csv(tmp_path / "mine.csv")["Id"].tolist() == good
    (tmp_path / "mine.csv").unlink()
    assert_one_line_error(run(*common, "--strict"), "--strict:", "empty_red.png: empty file (0 bytes)")
    assert not (tmp_path / "mine.csv").exists()
    red = images / f"{good[0]}_red.png"
    before = red.read_bytes()
    assert_one_line_error(run(*common[:-1], red), f"{red}: is an input (image)", "predictions (--out)")
    assert_one_line_error(run(*common[:-1], ids, "--ids", ids), "input (Id list (--ids))")
    assert red.read_bytes() == before


# ---- 7. a full disk --------------------------------------------------------------------------

class _FullFile:
    """A file object on a full disk: the first write fails with ENOSPC."""

    def __init__(self, path, mode="r", *a, **kw):
        self.f = open(path, mode, *a, **kw)  # noqa: SIM115

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_a_full_disk_is_one_line_naming_the_file_and_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    import hpa.core.atomic
    import hpa.data.arrays
    from hpa.core.checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "config": {}, "epoch": 1})
    monkeypatch.setattr(hpa.core.atomic, "open", _FullFile, raising=False)
    with pytest.raises(DiskFullError, match=f"{path}: no space left on device \\(.* MiB free in {tmp_path}\\)"):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "config": {}, "epoch": 2})
    assert load_checkpoint(path)["epoch"] == 1  # the previous checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind
    monkeypatch.setattr(hpa.data.arrays, "open", _FullFile, raising=False)
    import numpy as np

    with pytest.raises(DiskFullError, match="a.npy: no space left on device"):
        hpa.data.arrays.write_prepared(tmp_path / "a.npy", np.zeros((4, 4, 4), np.uint8))


def test_a_real_full_filesystem_is_one_line(tmp_path):
    """The same on a real 1 MiB tmpfs, where the kernel says ENOSPC (needs root to mount; skipped otherwise)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()[:80]})")
    try:
        from hpa.core.checkpoint import load_checkpoint, save_checkpoint

        save_checkpoint(mnt / "last.pt", {"model": {"w": torch.ones(10)}, "config": {}, "epoch": 1})
        with pytest.raises(DiskFullError, match="last.pt: no space left on device"):
            save_checkpoint(mnt / "last.pt", {"model": {"w": torch.zeros(2**20)}, "config": {}, "epoch": 2})
        assert load_checkpoint(mnt / "last.pt")["epoch"] == 1
        assert [p.name for p in mnt.iterdir()] == ["last.pt"]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_fresh_start_in_a_directory_interrupted_before_its_first_checkpoint(tmp_path):
    """The state machine, in-process: a run directory with its settings and provenance but no
    last.pt (the window before epoch 1 ends) starts fresh with --resume; with other settings it
    is refused with a way out that exists."""
    from hpa.config import TrainConfig, save_yaml
    from hpa.errors import RunError
    from hpa.training.rundir import guard_run_dir

    cfg = TrainConfig(arch="tiny_cnn", data_dir="d", epochs=2)
    save_yaml(tmp_path / "config.yaml", cfg.model_dump())
    (tmp_path / "provenance.json").write_text(json.dumps({"labels": {}}))
    (tmp_path / "class_counts.csv").write_text("class,count\n")
    assert guard_run_dir(tmp_path, cfg, resume=True, overwrite=False) is None
    assert guard_run_dir(tmp_path, cfg, resume=False, overwrite=False) is None
    with pytest.raises(RunError, match=r"started with other settings \(lr 0.01 -> 0.5\) and holds no checkpoint; "
                                       "--overwrite replaces it"):
        guard_run_dir(tmp_path, cfg.model_copy(update={"lr": 0.5}), resume=True, overwrite=False)


@pytest.mark.slow
def test_sigterm_with_loader_workers_stops_at_a_step_and_resumes_bit_identical(data, tmp_path):
    """`kill PID` (SIGTERM, as a preemption sends) to a run with 2 DataLoader workers: it stops at the
    next step with one `stopped:` line (no traceback, no hang on its workers), and `--resume` ends
    bit-identical to a run never stopped."""
    args = [*TRAIN, "--fold", 0, "--data-dir", data, "--batch-size", 2, "--workers", 2, "--limit-batches", 60]
    ref = run("train_fold.py", *args, "--runs", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-2000:]
    p = subprocess.Popen([sys.executable, "train_fold.py", *map(str, args), "--runs", str(tmp_path / "cut")], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "SIGTERM or SIGUSR1 stops the run" in p.stdout.readline()
    log = tmp_path / "cut" / "tiny_cnn_64" / "f0" / "log.csv"
    deadline = time.time() + 120
    while not (log.is_file() and len(pd.read_csv(log)) >= 1) and time.time() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGTERM)  # early in epoch 2, at whatever step it has reached
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1 and "Traceback" not in err, err[-2000:]
    assert err.startswith("stopped: [tiny_cnn_64 f0] stopped by SIGTERM at "), err
    assert "last.pt saved there; run the same command again to resume" in err
    done = run("train_fold.py", *args, "--runs", tmp_path / "cut", "--resume")
    assert done.returncode == 0 and "resumed from" in done.stdout, done.stderr[-2000:]
    a = torch.load(tmp_path / "ref" / "tiny_cnn_64" / "f0" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "tiny_cnn_64" / "f0" / "last.pt", weights_only=True)
    assert a["lr_steps"] == b["lr_steps"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


class _ParentPid(torch.utils.data.Dataset):
    """Each item is the process id of the worker's parent."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> int:
        return os.getppid()


@pytest.mark.slow
def test_loader_workers_are_forked_by_a_server_not_by_the_calling_process():
    """A process that runs other threads must not fork its loader workers: a child can inherit a lock
    one of those threads held and wait on it for ever (a DDP rank hung so at validation)."""
    from torch.utils.data import DataLoader

    from hpa.core.runtime import loader_processes

    ds = _ParentPid()
    parents = [int(p) for batch in DataLoader(ds, batch_size=1, **loader_processes(2, ds)) for p in batch]
    assert len(parents) == 2 and os.getpid() not in parents
    assert loader_processes(0, ds) == {"num_workers": 0}


class _Pid(torch.utils.data.Dataset):
    """Each item is the process id of the worker that loads it."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> int:
        return os.getpid()


ORPHAN = """
import sys, time
sys.path.insert(0, sys.argv[1])
from torch.utils.data import DataLoader
from hpa.core.runtime import loader_processes
from test_reliability import _Pid
it = iter(DataLoader(_Pid(), batch_size=1, **loader_processes(1, _Pid())))
print(int(next(it)[0]), flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


@pytest.mark.slow
def test_loader_workers_end_with_a_process_killed_by_sigkill():
    """The workers' parent is the fork server, which they keep alive: when the loader's process is
    killed (kill -9, an OOM kill) they must end with it, not run for ever beside the server."""
    p = subprocess.Popen([sys.executable, "-c", ORPHAN, str(ROOT / "tests")], cwd=ROOT, stdout=subprocess.PIPE,
                         text=True)
    worker = int(p.stdout.readline())
    server = int(Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[1])  # the worker's parent
    assert not _gone(worker) and server != p.pid
    p.kill()
    p.wait()
    deadline = time.time() + 20
    while not (_gone(worker) and _gone(server)) and time.time() < deadline:
        time.sleep(0.2)
    assert _gone(worker) and _gone(server)
