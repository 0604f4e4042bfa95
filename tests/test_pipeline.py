"""End to end through the command lines, on a tiny demo: every stage, the file contracts,
and a model that learned (test macro F1 clearly above the best image-blind predictor)."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scripts import run_script

from conftest import ROOT, private_copy
from hpa.data.labels import labels_matrix, read_labels
from hpa.data.predictions import COLUMNS, read_predictions
from hpa.prediction.metrics import best_constant_macro_f1, macro_f1

pytestmark = pytest.mark.slow  # subprocess and end-to-end runs


def run(*args, here: bool = False):
    """A script in a subprocess, or in this process (`here`) once the fixture has run it in one."""
    if here:
        r = run_script(*args)
    else:
        r = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, f"{args[0]} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def pipeline(tiny_demo, tmp_path_factory):
    d = private_copy(tiny_demo, tmp_path_factory.mktemp("pipeline") / "data")
    work = tmp_path_factory.mktemp("work")
    cfg = work / "tiny64.yaml"  # at 64 px the stride-2 stem would blur away the small patterns
    # fp32: on a CPU without native bf16 (no AVX512-BF16/AMX) bf16 autocast is emulated and 5x slower.
    # Width 8, not tiny_cnn's 16: a step costs a third, and 32 epochs of it trained in half the time of 24
    # at width 16 with a larger margin over the image-blind baseline + 0.1 (0.057 against 0.049; the
    # fixture took 144 s, now about 80; a crop of 48 px instead cost the whole margin)
    cfg.write_text("model: {stem_stride: 1, width: 8}\namp: \"off\"\n")
    run("input_prep/prepare.py", "--data-dir", d, "--size", 64)
    run("input_prep/dedup.py", "--data-dir", d, "--out-dir", d / "dedup", "--size", 64)
    run("input_prep/make_folds.py", "--labels", d / "train.csv", "--n-folds", 2, "--seed", 0, "--out", d / "folds.csv",
        "--groups", d / "dedup" / "duplicate_groups.csv", "--duplicates", "group")
    # the two folds train at once, one thread each (1.55x the throughput of one 2-thread run on 2 cores)
    procs = [subprocess.Popen([sys.executable, "train_fold.py", "--arch", "tiny_cnn", "--fold", str(fold), "--size",
                               "64", "--data-dir", str(d), "--runs", str(work / "runs"), "--epochs", "32",
                               "--batch-size", "16", "--config", str(cfg)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
             for fold in (0, 1)]
    for p in procs:
        out = p.communicate()[0]
        assert p.returncode == 0, f"train_fold.py failed:\n{out[-3000:]}"
    run("predict_tta.py", "--arch", "tiny_cnn", "--size", 64, "--folds", 0, 1, "--tta", 2, "--data-dir", d,
        "--runs", work / "runs", "--out-dir", work / "predictions")
    run("find_thresholds.py", "--oof", work / "predictions" / "tiny_cnn_64_f*_oof.csv", "--labels", d / "train.csv",
        "--out", work / "thresholds.json")
    out = run("blend.py", "--oof", work / "predictions" / "*_oof.csv", "--test", work / "predictions" / "*_test.csv",
              "--data-dir", d, "--test-labels", d / "test_labels.csv", "--out", work / "submission.csv")
    return d, work, out


def test_dedup_finds_every_injected_duplicate_and_nothing_else(pipeline):
    d, _, _ = pipeline
    truth = {frozenset(r) for r in pd.read_csv(d / "demo_duplicates.csv").itertuples(index=False)}
    found = {frozenset((a, b)) for a, b in pd.read_csv(d / "dedup" / "duplicate_pairs.csv")[["Id_a", "Id_b"]]
             .itertuples(index=False)}
    assert found == truth
    groups = pd.read_csv(d / "dedup" / "duplicate_groups.csv")
    folds = pd.read_csv(d / "folds.csv")
    g = dict(zip(groups["Id"], groups["group"]))
    f = dict(zip(folds["Id"], folds["fold"]))
    for pair in truth:  # a duplicate pair inside train never straddles two folds
        a, b = tuple(pair)
        if a in f and b in f:
            assert g[a] == g[b] and f[a] == f[b]


def test_run_directory_contents(pipeline):
    _, work, _ = pipeline
    run_dir = work / "runs" / "tiny_cnn_64" / "f0"
    for name in ("config.yaml", "log.csv", "curves.png", "best.pt", "last.pt"):
        assert (run_dir / name).is_file(), name
    log = pd.read_csv(run_dir / "log.csv")
    assert list(log["epoch"]) == list(range(1, 33))
    assert {"train_loss", "val_loss", "val_macro_f1", "lr", "f1_0", "f1_27"} <= set(log.columns)
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]


def test_prediction_files_follow_the_contract(pipeline):
    d, work, _ = pipeline
    folds = pd.read_csv(d / "folds.csv")
    sub_ids = pd.read_csv(d / "sample_submission.csv")["Id"].tolist()
    for fold in (0, 1):
        oof = work / "predictions" / f"tiny_cnn_64_f{fold}_oof.csv"
        assert pd.read_csv(oof, nrows=1).columns.tolist() == COLUMNS
        ids, _ = read_predictions(oof)
        assert sorted(ids) == sorted(folds.loc[folds["fold"] == fold, "Id"])
        tids, _ = read_predictions(work / "predictions" / f"tiny_cnn_64_f{fold}_test.csv")
        assert tids == sub_ids
    th = json.loads((work / "thresholds.json").read_text())
    assert len(th["thresholds"]) == 28 and th["macro_f1"] >= th["macro_f1_at_0.5"]
    assert (work / "thresholds.png").is_file() and (work / "thresholds.csv").is_file()


def test_submission_format_and_the_model_learned(pipeline):
    d, work, out = pipeline
    sub = pd.read_csv(work / "submission.csv", dtype=str, keep_default_na=False)
    sample = pd.read_csv(d / "sample_submission.csv", dtype=str)
    assert sub.columns.tolist() == ["Id", "Predicted"]
    assert sub["Id"].tolist() == sample["Id"].tolist()
    pred = np.zeros((len(sub), 28), bool)
    for i, t in enumerate(sub["Predicted"]):
        labels = [int(v) for v in t.split()]
        assert labels and labels == sorted(set(labels)) and all(0 <= v < 28 for v in labels)
        pred[i, labels] = True
    truth = read_labels(d / "test_labels.csv")
    y = labels_matrix(truth)
    assert truth["Id"].tolist() == sub["Id"].tolist()
    score = macro_f1(y, pred)
    assert f"TEST MACRO F1: {score:.4f}" in out
    baseline = best_constant_macro_f1(y)
    assert score > baseline + 0.1, (score, baseline)
    assert (work / "report.md").is_file() and (work / "report.png").is_file()


def test_multi_size_tta_prediction(pipeline, tmp_path):
    d, work, _ = pipeline
    run("predict_tta.py", "--arch", "tiny_cnn", "--size", 64, "--folds", 0, "--sizes", 64, 80, "--tta", "id,rot90",
        "--data-dir", d, "--runs", work / "runs", "--out-dir", tmp_path, here=True)
    ids, multi = read_predictions(tmp_path / "tiny_cnn_64_f0_oof.csv")
    ids1, single = read_predictions(work / "predictions" / "tiny_cnn_64_f0_oof.csv")
    assert ids == ids1 and multi.shape == single.shape
    assert not np.allclose(multi, single) and np.corrcoef(multi.ravel(), single.ravel())[0, 1] > 0.9


def test_predict_a_biologists_own_images(pipeline, real_samples, tmp_path):
    _, work, _ = pipeline
    images, rows = real_samples
    out = tmp_path / "mine.csv"
    run("predict_tta.py", "--arch", "tiny_cnn", "--size", 64, "--folds", 0, 1, "--tta", 2, "--images", images,
        "--runs", work / "runs", "--thresholds", work / "thresholds.json", "--out", out, here=True)
    df = pd.read_csv(out)
    assert sorted(df["Id"]) == sorted(r[0] for r in rows)  # 512, 2048 and 3072 px samples
    assert df.columns.tolist() == COLUMNS + ["predicted"]
    probs = df[COLUMNS[1:]].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all()
    from hpa.data.labels import CLASS_NAMES
    for names in df["predicted"]:
        assert names and all(n in CLASS_NAMES for n in names.split("; "))
