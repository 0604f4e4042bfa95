"""A careless user through the command lines: every bad input or mistake ends in one line
`error: ...` naming the file, row or flag, exit code 1, no traceback, and no output changed."""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scripts import run_script

from conftest import ROOT, assert_one_line_error, private_copy
from hpa import cli
from hpa.errors import HPAError, LabelError

pytestmark = pytest.mark.slow  # trains and predicts


def run(*args, ok=False):
    r = run_script(*args)
    if ok:
        assert r.returncode == 0, f"{args[0]} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r


def digest(paths) -> dict:
    """Content of every file (the `.lock` of a run directory names its last holder, not an output)."""
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths
            if Path(p).is_file() and Path(p).name != ".lock"}


@pytest.fixture(scope="module")
def setup(tiny_demo, tmp_path_factory):
    """A private copy of the tiny demo with 2 folds, one trained fold pair (1 short epoch) and predictions."""
    d = tmp_path_factory.mktemp("careless") / "data"
    private_copy(tiny_demo, d)
    run("input_prep/prepare.py", "--data-dir", d, "--size", 64, ok=True)
    run("input_prep/make_folds.py", "--labels", d / "train.csv", "--n-folds", 2, "--out", d / "folds.csv", ok=True)
    runs, preds = d.parent / "runs", d.parent / "predictions"
    for fold in (0, 1):
        run("train_fold.py", "--arch", "tiny_cnn", "--fold", fold, "--size", 64, "--data-dir", d, "--runs", runs,
            "--epochs", 1, "--limit-batches", 2, "--batch-size", 8, ok=True)
    run("predict_tta.py", "--arch", "tiny_cnn", "--size", 64, "--folds", 0, 1, "--tta", 1, "--runs", runs,
        "--out-dir", preds, "--workers", 0, ok=True)
    return d, runs, preds


def train(d, runs, *extra):
    return run("train_fold.py", "--arch", "tiny_cnn", "--fold", 0, "--size", 64, "--data-dir", d, "--runs", runs,
               "--epochs", 1, "--limit-batches", 2, "--batch-size", 8, *extra)


def test_training_flags_and_configs(setup, tmp_path):
    d, _, _ = setup
    runs = tmp_path / "runs"
    bad = tmp_path / "bad.yaml"
    bad.write_text("lrr: 0.1\n")
    cases = [
        (["--epochs", 0], ["--epochs", "greater than or equal to 1"]),
        (["--batch-size", 0], ["--batch-size", "greater than or equal to 1"]),
        (["--config", tmp_path / "missing.yaml"], ["missing.yaml: config file not found"]),
        (["--config", bad], ["bad.yaml: unknown setting 'lrr' (did you mean 'lr'?)"]),
        (["--set", "model.widht=8"], ["model setting 'widht' does not exist for arch 'tiny_cnn'"]),
        (["--device", "cuda"], ["--device cuda: no such CUDA device"]),
        (["--fold", 7], ["--fold 7:", "has folds [0, 1]"]),
        (["--hard-k", 1.5], ["--hard-k", "fraction in (0, 1]"]),
        (["--amp", "fp16", "--device", "cpu"], ["--amp fp16 needs a CUDA device"]),
        (["--pretrained", tmp_path / "none.pth"], ["none.pth: weights file not found"]),
    ]
    for extra, fragments in cases:
        assert_one_line_error(train(d, runs, *extra), *fragments)
    assert not runs.exists()  # nothing was written by any of them
    r = run("train_fold.py", "--arch", "tiny_cnn", "--size", 64, "--runs", runs)
    assert_one_line_error(r, "--data-dir: no dataset directory given")
    r = run("train_fold.py", "--arch", "tiny_cnn", "--bogus", 1)
    assert_one_line_error(r, "unrecognized arguments: --bogus")


def test_a_run_is_never_replaced_silently_and_resume_refuses_changes(setup, tmp_path):
    d, _, _ = setup
    runs = tmp_path / "runs"
    assert train(d, runs).returncode == 0
    run_dir = runs / "tiny_cnn_64" / "f0"
    files = list(run_dir.iterdir())
    before = digest(files)
    assert_one_line_error(train(d, runs), "holds a finished run", "--resume continues it", "--overwrite replaces it")
    assert_one_line_error(train(d, runs, "--resume", "--lr", 0.01), "--resume with changed settings",
                          "lr 0.003 -> 0.01")
    assert_one_line_error(train(d, runs, "--resume", "--batch-size", 4), "batch_size 8 -> 4")
    assert digest(files) == before
    r = train(d, runs, "--resume")  # unchanged settings: nothing to do, nothing rewritten
    assert r.returncode == 0 and "already trained for 1 epochs" in r.stdout and digest(files) == before
    r = train(d, runs, "--resume", "--epochs", 2)  # a longer schedule is another run
    assert_one_line_error(r, "epochs 1 -> 2")
    r = train(d, runs, "--overwrite", "--seed", 3)
    assert r.returncode == 0 and digest(files) != before
    (run_dir / "last.pt").write_bytes(b"not a checkpoint")
    assert_one_line_error(train(d, runs, "--resume", "--seed", 3), "last.pt: cannot be read as a checkpoint")


def test_a_truncated_prepared_sample_is_named_even_from_a_worker(setup, tmp_path):
    d, _, _ = setup
    d2 = tmp_path / "data"
    shutil.copytree(d, d2)
    victim = sorted((d2 / "prepared" / "64" / "train").glob("*.npy"))[5]
    victim.write_bytes(victim.read_bytes()[:200])
    r = train(d2, tmp_path / "runs", "--workers", 2, "--limit-batches", 0)
    assert_one_line_error(r, f"{victim}: corrupt prepared sample")


def test_input_preparation_says_when_there_is_nothing_to_do(tmp_path):
    assert_one_line_error(run("input_prep/prepare.py", "--data-dir", tmp_path / "nope", "--size", 64),
                          "nope: no such directory")
    assert_one_line_error(run("input_prep/prepare.py", "--data-dir", tmp_path, "--size", 64), "none of the splits")
    assert_one_line_error(run("input_prep/dedup.py", "--data-dir", tmp_path, "--out-dir", tmp_path / "dd"),
                          "no train/, test/ or external/ images")
    (tmp_path / "train.csv").write_text("Id,Target\na,0\nb,1\nc,2\n")
    assert_one_line_error(run("input_prep/make_folds.py", "--labels", tmp_path / "train.csv", "--n-folds", 5, "--out",
                              tmp_path / "f.csv"), "--n-folds 5:", "only 3 samples")
    (tmp_path / "bad.csv").write_text("Id,Target\na,0\nb/../x,1\n")
    r = run("input_prep/make_folds.py", "--labels", tmp_path / "bad.csv", "--out", tmp_path / "f.csv")
    assert_one_line_error(r, "bad.csv, row 3", "invalid sample Id")
    assert not (tmp_path / "f.csv").exists()


def test_predictions_refuse_runs_trained_on_other_folds(setup, tmp_path):
    d, runs, _ = setup
    d2 = tmp_path / "data"
    shutil.copytree(d, d2)
    run("input_prep/make_folds.py", "--labels", d2 / "train.csv", "--n-folds", 2, "--seed", 7, "--out",
        d2 / "folds.csv", ok=True)
    out = tmp_path / "preds"
    r = run("predict_tta.py", "--arch", "tiny_cnn", "--size", 64, "--folds", 0, 1, "--tta", 1, "--runs", runs,
            "--data-dir", d2, "--out-dir", out)
    assert_one_line_error(r, "f0: was trained with other folds than", "folds.csv now holds")
    assert not out.exists()
    r = run("predict_tta.py", "--arch", "tiny_cnn", "--size", 64, "--folds", 0, 5, "--runs", runs, "--out-dir", out)
    assert_one_line_error(r, "f5/best.pt not found")
    assert not out.exists()


def test_prediction_outputs_appear_together_or_not_at_all(setup, tmp_path):
    """The test split is broken: no OOF file may be written before the failure."""
    d, runs, _ = setup
    d2 = tmp_path / "data"
    shutil.copytree(d, d2)
    victim = sorted((d2 / "prepared" / "64" / "test").glob("*.npy"))[0]
    victim.unlink()
    out = tmp_path / "preds"
    r = run("predict_tta.py", "--arch", "tiny_cnn", "--size", 64, "--folds", 0, "--tta", 1, "--runs", runs,
            "--data-dir", d2, "--out-dir", out, "--workers", 0)
    assert_one_line_error(r, f"{victim}: not prepared")
    assert not out.exists() or not list(out.iterdir())


def test_blend_checks_everything_before_writing(setup, tmp_path):
    d, _, preds = setup
    out = tmp_path / "submission.csv"
    out.write_text("old submission\n")
    (tmp_path / "report.md").write_text("old report\n")
    before = digest([out, tmp_path / "report.md"])
    oof, test = preds / "*_oof.csv", preds / "*_test.csv"
    bad_labels = tmp_path / "test_labels.csv"
    bad_labels.write_text("Id,Target\nnot-a-test-id,0\n")
    cases = [
        (["--data-dir", d, "--test-labels", bad_labels], ["test_labels.csv: ", "Ids missing"]),
        (["--data-dir", d, "--rounds", 0], ["--rounds", "expected an integer >= 1"]),
        ([], ["--data-dir (or both --labels and --sample-submission) is needed"]),
        (["--data-dir", d, "--method", "nope"], ["--method", "invalid choice"]),
    ]
    for extra, fragments in cases:
        r = run("blend.py", "--oof", oof, "--test", test, "--out", out, *extra)
        assert_one_line_error(r, *fragments)
    # labels other than the runs were trained with
    other = tmp_path / "other.csv"
    lab = pd.read_csv(d / "train.csv")
    lab.loc[0, "Target"] = "27"
    lab.to_csv(other, index=False)
    r = run("blend.py", "--oof", oof, "--test", test, "--out", out, "--labels", other, "--sample-submission",
            d / "sample_submission.csv")
    assert_one_line_error(r, "trained with other labels than", "other.csv")
    # a fold's OOF file is missing: an error, or with --allow-missing-oof a reported choice
    r = run("blend.py", "--oof", preds / "tiny_cnn_64_f0_oof.csv", "--test", test, "--out", out, "--data-dir", d)
    assert_one_line_error(r, "model tiny_cnn_64: its OOF files cover", "is a fold's file absent?")
    assert digest([out, tmp_path / "report.md"]) == before
    r = run("blend.py", "--oof", preds / "tiny_cnn_64_f0_oof.csv", "--test", test, "--out", out, "--data-dir", d,
            "--allow-missing-oof")
    assert r.returncode == 0 and "note: model tiny_cnn_64: its OOF files cover" in r.stdout
    assert "Note: model tiny_cnn_64" in (tmp_path / "report.md").read_text()
    r = run("find_thresholds.py", "--oof", oof, "--labels", tmp_path / "missing.csv", "--out", tmp_path / "t.json")
    assert_one_line_error(r, "missing.csv: file not found")


def test_own_images_skip_bad_samples_and_see_upper_case_extensions(setup, real_samples, tmp_path):
    _, runs, _ = setup
    images, rows = real_samples
    folder = tmp_path / "mine"
    folder.mkdir()
    small = [r for r in rows if r[2].startswith("512")] or rows[:1]
    sid = small[0][0]
    for c in ("red", "green", "blue", "yellow"):
        shutil.copy(images / f"{sid}_{c}.png", folder / f"{sid}_{c}.png")
        shutil.copy(images / f"{sid}_{c}.png", folder / f"UPPER_{c}.PNG")
        shutil.copy(images / f"{sid}_{c}.png", folder / f"cut_{c}.png")
    (folder / "cut_green.png").write_bytes((folder / "cut_green.png").read_bytes()[:500])
    (folder / "lonely_red.png").write_bytes((folder / "UPPER_red.PNG").read_bytes())  # 3 channels missing
    (folder / "bad id_red.png").write_bytes(b"")  # a name that is not a safe Id
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "mine.csv"
    args = ["predict_tta.py", "--arch", "tiny_cnn", "--size", 64, "--folds", 0, "--tta", 1, "--runs", runs, "--images",
            folder, "--out", out, "--workers", 0]
    r = run(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(pd.read_csv(out)["Id"]) == sorted([sid, "UPPER"])
    for name in ("cut", "lonely", "bad id_red.png"):
        assert any(ln.startswith(f"skipped {name}") for ln in r.stdout.splitlines()), (name, r.stdout)
    assert "skipped 3" in r.stdout
    page = (tmp_path / "report.html").read_text()  # the report beside the predictions, with the skipped samples
    assert "UPPER" in page and "lonely" in page and (tmp_path / "report_files" / "UPPER.jpg").is_file()
    before = digest([out])
    assert_one_line_error(run(*args, "--strict"), "--strict: bad id_red.png", "sample(s) could not be read")
    assert digest([out]) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run(*args, "--images", empty), "no <Id>_red")
    assert_one_line_error(run(*args, "--thresholds", tmp_path / "nope.json"), "nope.json: file not found")


def test_written_files_follow_the_umask(setup, tmp_path):
    d, _, preds = setup
    r = subprocess.run(f"umask 022 && {sys.executable} blend.py --oof '{preds}/*_oof.csv' --test '{preds}/*_test.csv' "
                       f"--data-dir {d} --out {tmp_path / 'sub.csv'}", shell=True, cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    for name in ("sub.csv", "report.md", "report.png", "blend.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    for p in [*preds.iterdir(), *(d.parent / "runs" / "tiny_cnn_64" / "f0").iterdir(), d / "folds.csv"]:
        assert p.stat().st_mode & 0o044, p  # group and others can read what a default umask allows
    np.testing.assert_equal(sorted(p.name for p in tmp_path.glob(".*.tmp*")), [])


def test_cli_wrapper_one_line_and_exit_1(capsys):
    def boom(_):
        raise HPAError("data/x.csv, row 3: bad")

    with pytest.raises(SystemExit) as e:
        cli.run(boom)
    assert e.value.code == 1 and capsys.readouterr().err == "error: data/x.csv, row 3: bad\n"
    worker = LabelError("Caught LabelError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                        "last):\n  File \"x.py\", line 1\nhpa.labels.LabelError: f.csv, row 2: invalid sample Id\n")
    assert cli.one_line(worker) == "f.csv, row 2: invalid sample Id"
    missing = FileNotFoundError(2, "No such file or directory", "a.csv")
    assert cli.one_line(missing) == "a.csv: no such file or directory"

    def signalled(_):
        from hpa.errors import Stopped

        raise Stopped("[x f0] stopped by SIGTERM at epoch 2, step 5: last.pt saved there")

    with pytest.raises(SystemExit) as e:  # a requested stop is not an error, but still ends non-zero
        cli.run(signalled)
    assert e.value.code == 1 and capsys.readouterr().err.startswith("stopped: [x f0] stopped by SIGTERM")
