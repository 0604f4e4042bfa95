"""Blend weights and thresholds chosen by cross-validation inside the OOF rows, each piece
against an independent reference."""

import itertools

import numpy as np
import pytest
from sklearn.metrics import f1_score

from conftest import shared_path
from hpa.prediction.blending import (
    METHODS_ORDER,
    WEIGHTINGS,
    Blend,
    BlendSettings,
    bagged_greedy_weights,
    best_cut_macro_f1,
    choose_blend,
    cv_splits,
    fit_blend,
    greedy_weights,
    score,
)
from hpa.prediction.thresholds import apply_thresholds, fit_thresholds


def synthetic(n=600, c=6, models=(1.5, 1.0, 0.2), seed=0, scale=1.0):
    """Labels with class rates from 30% to 3%; each model's logit is quality * (2y - 1) + noise."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < np.linspace(0.3, 0.03, c)).astype(np.float32)
    shared = rng.normal(size=(n, c))
    preds = []
    for q in models:
        z = q * (2 * y - 1) - 1.0 + 0.6 * shared + rng.normal(size=(n, c))
        preds.append(scale / (1 + np.exp(-z)))
    return preds, y


def test_best_cut_macro_f1_equals_brute_force_over_the_cut_points():
    rng = np.random.default_rng(1)
    p = np.round(rng.random((300, 5)) * 40) / 40 * 0.999  # values on the 1/40 grid
    y = (rng.random((300, 5)) < 0.3).astype(float)
    y[:, 4] = 0  # a class without positives scores 0
    ref = []
    for k in range(5):
        cuts = [f1_score(y[:, k], p[:, k] >= t / 40, zero_division=0) for t in range(41)]
        ref.append(max(cuts))
    assert best_cut_macro_f1(p, y, bins=40) == pytest.approx(np.mean(ref))


def _reference_greedy(oofs, y, rounds, patience):
    counts, history = np.zeros(len(oofs)), []
    for r in range(rounds):
        trial = []
        for k in range(len(oofs)):
            c = counts.copy()
            c[k] += 1
            blend = sum(ci * o for ci, o in zip(c, oofs)) / c.sum()
            trial.append(best_cut_macro_f1(blend, y))
        k = int(np.argmax(trial))
        counts[k] += 1
        history.append((trial[k], counts.copy()))
        first_best = max(range(len(history)), key=lambda i: (history[i][0], -i))
        if r - first_best >= patience:
            break
    best = max(range(len(history)), key=lambda i: (history[i][0], -i))
    return history[best][1] / history[best][1].sum()


def test_greedy_selection_matches_a_plain_reimplementation():
    oofs, y = synthetic()
    w = greedy_weights(oofs, y, rounds=8)
    np.testing.assert_allclose(w, _reference_greedy(oofs, y, 8, patience=5))
    np.testing.assert_allclose(greedy_weights(oofs, y, rounds=12, patience=2), _reference_greedy(oofs, y, 12, 2))
    assert w[0] > w[2]  # the good model outweighs the noisy one
    assert best_cut_macro_f1(sum(wi * o for wi, o in zip(w, oofs)), y) >= max(best_cut_macro_f1(o, y) for o in oofs)


def test_bagged_selection_averages_greedy_on_random_halves():
    """Three models: every half of the library is one of the three pairs, so the bagged weights must
    be the mean of the plain greedy weights of some draw of 5 pairs; found by brute force over every
    count of each pair, without repeating the random draws."""
    oofs, y = synthetic()
    pairs = [(0, 1), (0, 2), (1, 2)]
    on_pair = []
    for pair in pairs:
        g = np.zeros(3)
        g[list(pair)] = _reference_greedy([oofs[k] for k in pair], y, 6, patience=5)
        on_pair.append(g)
    for seed in (3, 4):
        w = bagged_greedy_weights(oofs, y, rounds=6, bags=5, seed=seed)
        draws = [n for n in itertools.product(range(6), repeat=3) if sum(n) == 5
                 and np.allclose(w, sum(c * g for c, g in zip(n, on_pair)) / 5)]
        assert draws, w
        assert w.sum() == pytest.approx(1)
    # the three pairs give three different weight vectors, so a draw is told apart from another
    assert len({tuple(np.round(g, 6)) for g in on_pair}) == 3


def test_logit_blend_is_the_sigmoid_of_the_mean_logit():
    oofs, y = synthetic()
    b = fit_blend(oofs, y, "logit", "flat")
    expected = 1 / (1 + np.exp(-np.mean([np.log(o / (1 - o)) for o in oofs], axis=0)))
    np.testing.assert_allclose(b.combine(oofs), expected, rtol=1e-6)


def test_score_is_the_submission_rule():
    oofs, y = synthetic()
    b = Blend("equal", "exact", np.full(3, 1 / 3), fit_thresholds(np.mean(oofs, 0), y, "exact"))
    pred = apply_thresholds(np.mean(oofs, 0), b.thresholds)
    assert score(b, oofs, y) == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))


def test_cv_splits_are_stratified_partitions():
    _, y = synthetic(n=500)
    splits = cv_splits(y, 5, 2, seed=0)
    assert len(splits) == 10
    for r in range(2):
        held = np.concatenate([h for _, h in splits[5 * r:5 * r + 5]])
        assert sorted(held) == list(range(500))
    for fit_rows, held in splits:
        assert not set(fit_rows) & set(held)
        assert np.abs(y[held].mean(0) - y.mean(0)).max() < 0.03


def _exact_cut_by_hand(p, t):
    """The cut with the best F1, among the midpoints between consecutive distinct values and the lowest
    value, the highest first on ties; 0.5 for a class without positives."""
    if t.sum() == 0:
        return 0.5
    v = np.unique(p)[::-1]
    cuts = np.array([(a + b) / 2 for a, b in zip(v[:-1], v[1:])] + [v[-1]])
    pred, pos = p[None, :] >= cuts[:, None], t[None, :] > 0.5
    tp, fp, fn = (pred & pos).sum(1), (pred & ~pos).sum(1), (~pred & pos).sum(1)
    return cuts[int(np.argmax(2 * tp / (2 * tp + fp + fn)))]  # F1 = 2TP / (2TP + FP + FN) at every cut


def _equal_exact_by_hand(fit_oofs, fit_y, held_oofs, held_y):
    fit_p, held_p = np.mean(fit_oofs, 0), np.mean(held_oofs, 0)
    thr = np.array([_exact_cut_by_hand(fit_p[:, c], fit_y[:, c]) for c in range(fit_y.shape[1])])
    pred = held_p >= thr
    empty = ~pred.any(1)  # every sample has a label: the class of highest p / threshold
    pred[empty, np.argmax(held_p[empty] / thr, 1)] = True
    return f1_score(held_y, pred, average="macro", zero_division=0)


def test_auto_picks_the_best_cross_validated_pair_and_avoids_flat_thresholds_on_uncalibrated_models():
    oofs, y = synthetic(n=900, scale=0.4)  # probabilities never reach 0.5: flat thresholds predict nothing
    (w, m), table = choose_blend(oofs, y, ["equal", "logit", "greedy", "bagged"], ["flat", "paper", "exact",
                                                                                     "shrink"], k=3, repeats=1,
                                 settings=BlendSettings(rounds=6), progress=False)
    assert len(table) == 16 and (table["n_scores"] == 3).all()
    chosen = table[table["chosen"]].iloc[0]
    assert (w, m) == (chosen["weights"], chosen["thresholds"]) and table["chosen"].sum() == 1
    # paired one-standard-error rule: the simplest pair whose shortfall to the best is within its SE
    assert chosen["shortfall"] <= chosen["shortfall_se"]
    assert table["shortfall"][0] == 0 and table["shortfall_se"][0] == 0
    near = table[table["shortfall"] <= table["shortfall_se"]]
    assert all((WEIGHTINGS.index(r.weights), METHODS_ORDER.index(r.thresholds)) >= (WEIGHTINGS.index(w),
               METHODS_ORDER.index(m)) for r in near.itertuples())
    assert m != "flat"
    flat = table[table["thresholds"] == "flat"]["cv_macro_f1"].max()
    assert flat < table["cv_macro_f1"][0] - 0.1
    # the table's mean is the mean of held-out scores computed by hand for one pair (equal weights,
    # exact thresholds): cuts searched by brute force with scikit-learn, the submission rule by hand
    splits = cv_splits(y, 3, 1, seed=0)
    by_hand = [_equal_exact_by_hand([o[f] for o in oofs], y[f], [o[h] for o in oofs], y[h]) for f, h in splits]
    row = table[(table["weights"] == "equal") & (table["thresholds"] == "exact")].iloc[0]
    assert row["cv_macro_f1"] == pytest.approx(np.mean(by_hand))
    assert row["std_error"] == pytest.approx(np.std(by_hand, ddof=1) / np.sqrt(3))
    best = table.iloc[0]
    best_by_hand = [score(fit_blend([o[f] for o in oofs], y[f], best["weights"], best["thresholds"], rounds=6),
                          [o[h] for o in oofs], y[h]) for f, h in splits]
    diff = np.subtract(best_by_hand, by_hand)
    assert row["shortfall"] == pytest.approx(diff.mean())
    assert row["shortfall_se"] == pytest.approx(np.std(diff, ddof=1) / np.sqrt(3))


def test_auto_on_the_real_2018_rows():
    """The 258 labelled rows of 4 real top-team models: auto runs, repeats its CV (few rows) and
    picks from the table."""
    import realdata

    shared_path("test-predictions")
    _, _, rows, y, preds = realdata.load_real()
    oofs = [p[rows] for p in preds.values()]
    (w, m), table = choose_blend(oofs, y, ["equal", "greedy"], ["paper", "shrink"], progress=False)
    assert (table["n_scores"] == 30).all()  # 10 folds x 3 repeats below 5,000 rows
    assert 0.4 < table["cv_macro_f1"][0] < 0.8 and table["chosen"].sum() == 1


def test_cv_folds_follow_the_rows():
    from hpa.errors import ConfigError
    from hpa.prediction.blending import cv_folds_for

    assert [cv_folds_for(n) for n in (2, 7, 4999, 5000)] == [2, 7, 10, 5]
    with pytest.raises(ConfigError, match="1 OOF row"):
        cv_folds_for(1)
    oofs, y = synthetic(n=7, c=3)
    y[:, 0] = 1  # every row has a label
    (_, _), table = choose_blend(oofs, y, ["equal"], ["paper"], progress=False)
    assert (table["n_scores"] == 21).all()  # 7 folds of one row, 3 repeats
