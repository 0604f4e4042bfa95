import itertools

import numpy as np
import pytest
from sklearn.metrics import f1_score

from hpa.prediction.metrics import best_constant_macro_f1, f1_per_class, macro_f1
from hpa.prediction.thresholds import (
    PAPER_GRID,
    apply_thresholds,
    exact_threshold,
    exact_thresholds,
    global_threshold,
    paper_thresholds,
    per_class_table,
    shrunk_thresholds,
)


def random_problem(n=300, c=28, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < rng.uniform(0.01, 0.4, c)).astype(np.float32)
    p = np.clip(0.35 * y + rng.random((n, c)) * 0.7, 0, 1)
    p[:, 5] = np.round(p[:, 5], 1)  # ties
    if c > 7:
        y[:, 7] = 0  # a class with no positives
    return p, y


def test_macro_f1_matches_sklearn():
    p, y = random_problem()
    pred = p >= 0.5
    assert macro_f1(y, pred) == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    assert np.allclose(f1_per_class(y, pred), f1_score(y, pred, average=None, zero_division=0))


def test_best_constant_predictor_is_brute_force_optimum():
    rng = np.random.default_rng(1)
    y = (rng.random((50, 4)) < [0.5, 0.2, 0.05, 0.0]).astype(float)
    best = max(macro_f1(y, np.tile(np.array(s, bool), (50, 1))) for s in itertools.product([0, 1], repeat=4))
    assert best_constant_macro_f1(y) == pytest.approx(best)


def brute_best_f1(p, t):
    """F1 = 2TP / (2TP + FP + FN) at every cut, all at once (scikit-learn's f1_score per cut is the
    same number 120 times slower)."""
    cands = np.unique(np.concatenate([p, [p.max() + 1]]))
    pred = p[None, :] >= cands[:, None]
    pos = t[None, :] > 0.5
    tp, fp, fn = (pred & pos).sum(1), (pred & ~pos).sum(1), (~pred & pos).sum(1)
    return float(np.max(np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)))


def test_exact_threshold_is_the_optimum_over_all_cut_points():
    p, y = random_problem(n=120)
    for c in range(28):
        thr, f1 = exact_threshold(p[:, c], y[:, c])
        achieved = f1_score(y[:, c], p[:, c] >= thr, zero_division=0)
        if y[:, c].sum() == 0:
            assert thr == 0.5 and f1 == 0.0
            continue
        assert achieved == pytest.approx(f1)
        assert f1 == pytest.approx(brute_best_f1(p[:, c], y[:, c]))


def test_paper_thresholds_match_brute_force_grid_search():
    p, y = random_problem(n=200, c=6, seed=3)
    thr = paper_thresholds(p, y)
    glob = max(PAPER_GRID, key=lambda g: (macro_f1(y, p >= g), -g))
    for c in range(6):
        scores = {g: f1_score(y[:, c], p[:, c] >= g, zero_division=0) for g in PAPER_GRID}
        assert scores[thr[c]] == pytest.approx(max(scores.values()))
        if scores[glob] == pytest.approx(max(scores.values())):
            assert thr[c] == glob  # kept the global value when nothing beats it
    assert set(np.round(thr, 2)) <= set(PAPER_GRID)


def test_exact_beats_or_equals_paper_on_the_fitting_data():
    p, y = random_problem(n=400, seed=5)
    assert macro_f1(y, p >= exact_thresholds(p, y)) >= macro_f1(y, p >= paper_thresholds(p, y)) - 1e-12


def test_shrunk_thresholds_formula():
    p, y = random_problem(n=300, seed=2)
    n = y.sum(0)
    g = max(PAPER_GRID, key=lambda v: (macro_f1(y, p >= v), -v))
    assert global_threshold(p, y) == pytest.approx(g)
    expected = (n * exact_thresholds(p, y) + 10 * g) / (n + 10)
    assert np.allclose(shrunk_thresholds(p, y), expected)
    with np.errstate(invalid="ignore"):  # k = 0 leaves 0/0 for classes without positives
        assert shrunk_thresholds(p, y, k=0)[n > 0] == pytest.approx(exact_thresholds(p, y)[n > 0])


def test_empty_rows_get_their_closest_class():
    p = np.array([[0.1, 0.3, 0.02], [0.9, 0.1, 0.1]])
    thr = np.array([0.5, 0.4, 0.15])
    pred = apply_thresholds(p, thr)
    assert pred.tolist() == [[False, True, False], [True, False, False]]  # 0.3/0.4 is the highest ratio
    assert not apply_thresholds(p, thr, fill_empty=False)[0].any()


def test_per_class_table_counts():
    y = np.array([[1, 0], [1, 1], [0, 1]])
    p = np.array([[0.9, 0.2], [0.4, 0.8], [0.7, 0.3]])
    t = per_class_table(p, y, np.array([0.5, 0.5]))
    assert t["support"].tolist() == [2, 2]
    assert t["precision"][0] == pytest.approx(0.5) and t["recall"][0] == pytest.approx(0.5)
    assert t["precision"][1] == pytest.approx(1.0) and t["recall"][1] == pytest.approx(0.5)
