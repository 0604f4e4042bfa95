import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, shared_path
from hpa.data.folds import conflicting, duplicates_to_drop, make_folds, max_proportion_deviation
from hpa.data.labels import labels_matrix, read_labels
from hpa.data.sampling import class_counts_table, oversample_plan


def test_folds_on_the_real_train_table():
    labels = read_labels(shared_path("kaggle-hpa-2018", "train.csv"))
    y = labels_matrix(labels)
    ids = labels["Id"].tolist()
    t = time.perf_counter()
    folds = make_folds(ids, y, 5, seed=0)
    took = time.perf_counter() - t
    assert np.bincount(folds).tolist() == pytest.approx([len(ids) / 5] * 5, rel=0.01)
    dev = max_proportion_deviation(y, folds, 5)
    print(f"largest class-share deviation {dev:.3f} pp, {took:.1f} s")
    assert dev < 0.5  # percentage points
    for c in range(28):  # even Rods & rings (11 samples) is spread over the folds
        per_fold = np.bincount(folds[y[:, c] > 0], minlength=5)
        assert per_fold.max() - per_fold.min() <= max(2, 0.02 * y[:, c].sum())
    assert np.array_equal(folds, make_folds(ids, y, 5, seed=0))  # deterministic
    assert not np.array_equal(folds, make_folds(ids, y, 5, seed=1))


def test_groups_never_straddle_folds():
    rng = np.random.default_rng(0)
    n = 600
    ids = [f"s{i}" for i in range(n)]
    y = (rng.random((n, 28)) < 0.1).astype(np.float32)
    groups = {f"s{i}": f"g{i // 3}" for i in range(0, 300)}  # 100 groups of 3
    folds = make_folds(ids, y, 4, seed=0, groups=groups)
    for g in range(100):
        assert len({folds[3 * g + k] for k in range(3)}) == 1


@pytest.mark.slow
def test_conflicting_groups_are_dropped(tmp_path):
    (tmp_path / "train.csv").write_text("Id,Target\na,0\nb,0\nc,1\nd,2 3\ne,3 2\n" +
                                        "".join(f"x{i},{i % 28}\n" for i in range(60)))
    (tmp_path / "groups.csv").write_text("Id,group\na,1\nb,1\nc,1\nd,2\ne,2\n")
    lab = read_labels(tmp_path / "train.csv")
    groups = dict(pd.read_csv(tmp_path / "groups.csv", dtype=str).values)
    assert conflicting(lab["Id"].tolist(), labels_matrix(lab), groups)[:5].tolist() == [True, True, True, False, False]
    r = subprocess.run([sys.executable, "input_prep/make_folds.py", "--labels", tmp_path / "train.csv", "--n-folds",
                        "3", "--out", tmp_path / "folds.csv", "--groups", tmp_path / "groups.csv", "--drop-conflicts"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    folds = pd.read_csv(tmp_path / "folds.csv").set_index("Id")["fold"]
    assert (folds[["a", "b", "c"]] == -1).all() and folds["d"] == folds["e"] >= 0
    assert "left out 3 samples (fold -1): 3 duplicate group with conflicting labels" in r.stdout
    assert (tmp_path / "folds_class_counts.csv").is_file()
    assert sorted(pd.read_csv(tmp_path / "folds_dropped.csv")["Id"]) == ["a", "b", "c"]


def test_duplicates_drop_keeps_one_per_group_preferring_the_first_table():
    ids = ["t1", "t2", "e1", "e2", "e3", "u"]
    y = np.zeros((6, 28), np.float32)
    y[[0, 2, 3], 0] = 1  # t1, e1, e2: one group, same labels
    y[1, 1], y[4, 2] = 1, 1  # t2 and e3: one group, conflicting labels
    y[5, 3] = 1
    groups = {"t1": "g", "e1": "g", "e2": "g", "t2": "h", "e3": "h"}
    table = np.array([0, 0, 1, 1, 1, 0])  # train.csv rows, then external.csv rows
    dropped = duplicates_to_drop(ids, y, groups, table)
    assert dropped == {"e1": "near-duplicate of t1", "e2": "near-duplicate of t1",
                       "t2": "duplicate group with conflicting labels", "e3": "duplicate group with conflicting labels"}


def test_oversample_plan_against_the_rule():
    rng = np.random.default_rng(0)
    y = (rng.random((1000, 28)) < np.linspace(0.002, 0.4, 28)).astype(np.float32)
    reps = oversample_plan(y, target_fraction=0.05, max_repeat=4)
    counts = y.sum(0)
    for i in range(len(y)):
        cls = np.flatnonzero(y[i])
        want = max([int(np.ceil(50 / counts[c])) for c in cls], default=1)
        assert reps[i] == min(4, max(1, want))
    table = class_counts_table(y, reps)
    assert table["count"].tolist() == counts.astype(int).tolist()
    assert (table["oversampled"] >= table["count"]).all()
    assert (table["oversampled"] <= 4 * table["count"]).all()
    rare = counts.argmin()
    assert table["oversampled"][rare] == 4 * counts[rare]  # the rarest class gets the cap
    assert (oversample_plan(y, 0.05, 1) == 1).all()  # max_repeat 1 turns it off
