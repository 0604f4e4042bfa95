"""Threshold search speed, and held-out macro F1 of thresholds and blends on real model outputs.

    python bench/bench_thresholds.py [--splits 200]

1. Speed on a 31,072 x 28 OOF (the real train.csv labels, synthetic probabilities): our exact,
   vectorised paper-grid and shrunk searches vs the paper's greedy grid written plainly with
   scikit-learn's f1_score (a macro F1 per global grid value, then a class F1 per class and value).
2. Real data: the 4 top-team 2018 test predictions with their 258 labelled rows. Each split fits
   model choice, weights and thresholds on a random half and scores the other half.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from results import SHARED, load_real, write_section
from sklearn.metrics import f1_score

from hpa.data.labels import labels_matrix, read_labels
from hpa.prediction.blending import greedy_weights
from hpa.prediction.metrics import macro_f1
from hpa.prediction.thresholds import PAPER_GRID, exact_thresholds, paper_thresholds, shrunk_thresholds


def sklearn_paper(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    glob = max(PAPER_GRID, key=lambda g: f1_score(y, probs >= g, average="macro", zero_division=0))
    thr = np.full(probs.shape[1], glob)
    for c in range(probs.shape[1]):
        best = f1_score(y[:, c], probs[:, c] >= glob, zero_division=0)
        for g in PAPER_GRID:
            s = f1_score(y[:, c], probs[:, c] >= g, zero_division=0)
            if s > best:
                best, thr[c] = s, g
    return thr


def timed(fn, *args, repeats=3):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn(*args)
        ts.append(time.perf_counter() - t)
    return min(ts), out


def speed_section() -> str:
    y = labels_matrix(read_labels(SHARED / "kaggle-hpa-2018" / "train.csv"))
    rng = np.random.default_rng(0)
    probs = np.clip(0.4 * y + rng.random(y.shape) * 0.6, 0, 1)
    t_sk, thr_sk = timed(sklearn_paper, probs, y, repeats=1)
    t_paper, thr_paper = timed(paper_thresholds, probs, y)
    t_exact, _ = timed(exact_thresholds, probs, y)
    t_shrink, _ = timed(shrunk_thresholds, probs, y)
    assert np.allclose(thr_sk, thr_paper), "vectorised paper search disagrees with the sklearn reference"
    rows = [("paper grid, plain scikit-learn f1_score", t_sk), ("paper grid, vectorised (ours)", t_paper),
            ("exact, all cut points (ours)", t_exact), ("shrink: exact pulled to the global value (ours)", t_shrink)]
    return (f"OOF of {y.shape[0]:,} x {y.shape[1]} (real train.csv labels, synthetic probabilities); "
            "best of 3 runs (1 for the slow ones).\n\n| search | seconds | vs sklearn paper grid |\n|---|---|---|\n"
            + "\n".join(f"| {n} | {t:.3f} | {t_sk / t:.0f}x faster |" if t < t_sk else f"| {n} | {t:.3f} | 1x |"
                        for n, t in rows)
            + "\n\nThe vectorised paper search returns the same thresholds as the scikit-learn one.")


def heldout_section(n_splits: int) -> str:
    _, ids, rows, y, preds = load_real()
    names = list(preds)
    P = [preds[m][rows] for m in names]
    n = len(ids)
    methods = {"0.5": lambda p, t: np.full(28, 0.5), "paper": paper_thresholds, "exact": exact_thresholds,
               "shrink": shrunk_thresholds}
    combos = ["best single model", "plain mean of 4", "greedy blend"]
    scores = {(c, m): [] for c in combos for m in methods}
    rng = np.random.default_rng(0)
    for _ in range(n_splits):
        perm = rng.permutation(n)
        a, b = perm[: n // 2], perm[n // 2:]
        best = int(np.argmax([macro_f1(y[a], p[a] >= exact_thresholds(p[a], y[a])) for p in P]))
        w = greedy_weights([p[a] for p in P], y[a], rounds=20)
        blends = {"best single model": P[best], "plain mean of 4": sum(P) / len(P),
                  "greedy blend": sum(wi * p for wi, p in zip(w, P))}
        for c, p in blends.items():
            for m, fit in methods.items():
                scores[(c, m)].append(macro_f1(y[b], p[b] >= fit(p[a], y[a])))
    head = "| model set | " + " | ".join(f"thresholds: {m}" for m in methods) + " |"
    lines = [head, "|---" * (len(methods) + 1) + "|"]
    for c in combos:
        cells = [f"{np.mean(scores[(c, m)]):.3f} ± {np.std(scores[(c, m)]) / np.sqrt(n_splits):.3f}"
                 for m in methods]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    single = {m: round(macro_f1(y, p >= 0.5), 3) for m, p in zip(names, P)}
    return (f"{n} labelled test rows of 4 real 2018 models ({', '.join(names)}; macro F1 at 0.5 on all rows: "
            f"{single}). {n_splits} random half splits: model choice (best single by exact-threshold F1), "
            "greedy weights (at most 20 rounds, scored by the best-cut macro F1) and thresholds are fitted on "
            "one half and scored on the other. "
            "Mean held-out macro F1 ± standard error:\n\n" + "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--splits", type=int, default=200)
    a = ap.parse_args()
    write_section("thresholds: speed", "python bench/bench_thresholds.py", speed_section())
    write_section("thresholds and blending: held-out macro F1 on real predictions",
                  f"python bench/bench_thresholds.py --splits {a.splits}", heldout_section(a.splits))


if __name__ == "__main__":
    main()
