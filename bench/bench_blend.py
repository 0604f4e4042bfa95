"""Blend settings on unseen rows: `auto` (chosen by cross-validation inside the OOF rows) against
every fixed pair of weighting and threshold method, on simulated OOF sets of several sizes and
model counts and on the real 258-row set of 2018 models; and the time `auto` takes on 31,072 x 10.

    python bench/bench_blend.py [--splits 3]

Noise model of a simulated set (labels are rows drawn from the real train.csv, so class
frequencies and label co-occurrence are real): model m's logit for class c is
    z = q_m * s_c * (2y - 1) + b_mc + 0.6 * e_shared + 0.8 * e_m
with model quality q_m ~ U(0.6, 2.0), class separability s_c ~ U(0.5, 1.6), a calibration offset
b_mc ~ N(-1.5, 0.7) per model and class (what per-class thresholds correct), noise e_shared common
to all models (their errors correlate) and e_m their own; probability = sigmoid(z).
Each set is split in halves `--splits` times: every setting is fitted on one half (the OOF) and
scored (macro F1, empty rows filled) on the other (unseen rows).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from results import SHARED, load_real, write_section

from hpa.data.labels import labels_matrix, read_labels
from hpa.prediction.blending import WEIGHTINGS, BlendSettings, choose_blend, fit_blend, score
from hpa.prediction.thresholds import METHODS

DEFAULT_BEFORE = ("greedy", "shrink")  # blend.py's fixed default before `auto`


def simulate(y_all: np.ndarray, n: int, models: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = y_all[rng.integers(0, len(y_all), n)]
    c = y.shape[1]
    s = rng.uniform(0.5, 1.6, c)
    shared = rng.normal(size=(n, c))
    preds = []
    for _ in range(models):
        q, b = rng.uniform(0.6, 2.0), rng.normal(-1.5, 0.7, c)
        z = q * s * (2 * y - 1) + b + 0.6 * shared + 0.8 * rng.normal(size=(n, c))
        preds.append(1 / (1 + np.exp(-z)))
    return preds, y


def held_out(preds, y, splits: int, seed: int) -> tuple[dict, list[tuple[str, str]]]:
    """Held-out macro F1 of every fixed pair and of auto over `splits` half splits; auto's choices."""
    pairs = [(w, m) for w in WEIGHTINGS for m in METHODS]
    scores: dict = {p: [] for p in [*pairs, "auto"]}
    choices = []
    for r in range(splits):
        perm = np.random.default_rng(seed + r).permutation(len(y))
        a, b = perm[: len(y) // 2], perm[len(y) // 2:]
        fit_p, held_p = [p[a] for p in preds], [p[b] for p in preds]
        for w, m in pairs:
            scores[(w, m)].append(score(fit_blend(fit_p, y[a], w, m, seed=r), held_p, y[b]))
        (w, m), _ = choose_blend(fit_p, y[a], list(WEIGHTINGS), list(METHODS), settings=BlendSettings(seed=r),
                                 progress=False)
        choices.append((w, m))
        scores["auto"].append(score(fit_blend(fit_p, y[a], w, m, seed=r), held_p, y[b]))
    return {k: (np.mean(v), np.std(v, ddof=1) / np.sqrt(len(v))) for k, v in scores.items()}, choices


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--splits", type=int, default=3, help="half splits of the largest simulated set (the smaller "
                                                          "sets and the real one use 10)")
    a = ap.parse_args()
    y_all = labels_matrix(read_labels(SHARED / "kaggle-hpa-2018" / "train.csv"))
    cases = [("sim 500 rows x 3 models", *simulate(y_all, 500, 3, 1), 10),
             ("sim 3,000 x 5", *simulate(y_all, 3000, 5, 2), 10),
             ("sim 12,000 x 8", *simulate(y_all, 12000, 8, 3), a.splits)]
    _, _, rows, y_real, real = load_real(SHARED)
    cases.append(("real 258 rows x 4 models", [p[rows] for p in real.values()], y_real, 10))
    lines = []
    summary = []
    for name, preds, y, splits in cases:
        t = time.perf_counter()
        res, choices = held_out(preds, y, splits, seed=0)
        fixed = {k: v for k, v in res.items() if k != "auto"}
        best = max(fixed, key=lambda k: fixed[k][0])
        auto_m, auto_se = res["auto"]
        before = fixed[DEFAULT_BEFORE]
        picked = ", ".join(f"{w}+{m}" for w, m in choices)
        summary.append(f"| {name} | {auto_m:.4f} ± {auto_se:.4f} | {best[0]}+{best[1]} {fixed[best][0]:.4f} ± "
                       f"{fixed[best][1]:.4f} | {before[0]:.4f} ± {before[1]:.4f} | "
                       f"{'yes' if auto_m >= fixed[best][0] - fixed[best][1] else 'NO'} | {picked} |")
        lines.append(f"\n**{name}** ({splits} half splits, {time.perf_counter() - t:.0f} s):\n\n"
                     "| weights \\ thresholds | " + " | ".join(METHODS) + " |\n" + "|---" * (len(METHODS) + 1) + "|")
        for w in WEIGHTINGS:
            lines.append(f"| {w} | " + " | ".join(f"{fixed[(w, m)][0]:.4f} ± {fixed[(w, m)][1]:.4f}"
                                                    for m in METHODS) + " |")
        print(summary[-1], flush=True)
    preds, y = simulate(y_all, 31072, 10, 4)
    t = time.perf_counter()
    (w, m), _ = choose_blend(preds, y, list(WEIGHTINGS), list(METHODS), progress=False)
    fit_blend(preds, y, w, m)
    seconds = time.perf_counter() - t
    body = ("Held-out macro F1 (mean ± standard error over half splits) of `--weights auto --method auto` against "
            "the best fixed setting in hindsight and against blend.py's fixed default before auto (greedy + shrink). "
            "'within 1 SE' says whether auto is no worse than the best fixed setting by more than its standard "
            "error.\n\n| set | auto | best fixed | greedy+shrink (old default) | within 1 SE | auto chose |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(summary)
            + f"\n\nTime of auto (5-fold CV of {len(WEIGHTINGS) * len(METHODS)} pairs, then the final fit) on a "
              f"simulated 31,072 x 28 OOF set of 10 models: **{seconds:.1f} s** (chose {w} + {m}).\n\n"
              "Every fixed setting per set:\n" + "\n".join(lines))
    write_section("blend: auto against fixed settings on unseen rows", f"python bench/bench_blend.py --splits "
                  f"{a.splits}", body)


if __name__ == "__main__":
    main()
