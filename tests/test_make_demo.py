import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from hpa.data.demo import draw_label_sets, make_demo, render
from hpa.data.images import read_sample
from hpa.data.labels import NUM_CLASSES, labels_matrix, read_ids, read_labels
from hpa.data.layout import DEMO_LABEL_SETS


@pytest.mark.slow  # the session's 600-image demo, which only slow tests need besides
def test_layout_and_contracts(tiny_demo):
    d = tiny_demo
    for f in ("train.csv", "test_labels.csv", "sample_submission.csv", "demo_duplicates.csv", "preview.png"):
        assert (d / f).is_file(), f
    train = read_labels(d / "train.csv")
    test = read_labels(d / "test_labels.csv")
    assert len(train) == 400 and len(test) == 200
    assert read_ids(d / "sample_submission.csv") == list(test["Id"])
    assert not set(train["Id"]) & set(test["Id"])
    img = read_sample(d / "train", train["Id"][0])
    assert img.shape == (64, 64, 4) and img.dtype == np.uint8
    n_files = len(list((d / "train").glob("*.png")))
    assert n_files == 4 * 400


@pytest.mark.slow  # the session's 600-image demo, which only slow tests need besides
def test_every_class_present_in_both_splits(tiny_demo):
    for f in ("train.csv", "test_labels.csv"):
        y = labels_matrix(read_labels(tiny_demo / f))
        assert (y.sum(0) >= 6).all(), (f, y.sum(0))


def test_label_sets_follow_the_real_distribution():
    table = json.loads(DEMO_LABEL_SETS.read_text())["label_sets"]
    assert sum(table.values()) == 31072  # derived from the real Kaggle train table
    sets = draw_label_sets(5000, np.random.default_rng(0), min_per_class=1)
    y = np.zeros((len(sets), NUM_CLASSES))
    for i, s in enumerate(sets):
        y[i, s] = 1
    freq = y.mean(0)
    real = np.zeros(NUM_CLASSES)
    for k, v in table.items():
        for c in k.split():
            real[int(c)] += v
    real /= sum(table.values())
    assert np.corrcoef(freq, real)[0, 1] > 0.98
    assert freq.argmax() == 0 and freq[27] < 0.01  # Nucleoplasm common, Rods & rings rare
    # co-occurrence: Nucleoplasm with Cytosol is the most common pair in the real table
    assert (y[:, 0] * y[:, 25]).mean() > 0.05


@pytest.mark.slow  # the session's 600-image demo, which only slow tests need besides
def test_duplicates_are_near_copies(tiny_demo):
    dups = pd.read_csv(tiny_demo / "demo_duplicates.csv")
    assert len(dups) >= 4
    test_ids = set(read_ids(tiny_demo / "sample_submission.csv"))
    assert any(a in test_ids for a in dups["Id_a"])  # test -> train leaks are injected too
    for a, b in dups.itertuples(index=False):
        ia = read_sample(tiny_demo / ("test" if a in test_ids else "train"), a).astype(float)
        ib = read_sample(tiny_demo / "train", b).astype(float)
        assert np.corrcoef(ia.ravel(), ib.ravel())[0, 1] > 0.95


def test_deterministic_for_a_seed(tmp_path):
    def digest(d):
        h = hashlib.sha256()
        for p in sorted(d.rglob("*")):
            if p.is_file():
                h.update(p.name.encode() + p.read_bytes())
        return h.hexdigest()

    make_demo(tmp_path / "a", 36, 36, 32, seed=7, min_per_class=1)
    make_demo(tmp_path / "b", 36, 36, 32, seed=7, min_per_class=1)
    make_demo(tmp_path / "c", 36, 36, 32, seed=8, min_per_class=1)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_patterns_are_distinct_and_located():
    """Each class's green pattern differs from every other; nuclear classes sit on the nucleus."""
    size = 96
    greens = []
    for c in range(NUM_CLASSES):
        img = render([c], size, np.random.default_rng(123))  # same cells for every class
        greens.append(img[:, :, 1].astype(float))
    for i in range(NUM_CLASSES):
        for j in range(i + 1, NUM_CLASSES):
            assert np.abs(greens[i] - greens[j]).mean() > 0.3, (i, j)
    blue = render([0], size, np.random.default_rng(123))[:, :, 2] > 60
    g0 = greens[0]
    assert g0[blue].mean() > 3 * g0[~blue].mean()  # nucleoplasm fills the nucleus
    g25 = greens[25]
    assert g25[~blue].mean() > g25[blue].mean()  # cytosol is outside it
