"""Why E-loss hurts at demo scale: the spread of its class weights on the demo's and on the real
data's class counts, and its interaction with the hard sampler, focal loss and alpha, from two
ablations on the same seeds and folds (so every comparison is paired over (seed, fold) cells).

    python bench/eloss_study.py --main ablations/resnet10t_64_demo --eloss ablations/resnet10t_64_eloss

--main: the ablation whose baseline is the paper config (eloss_focal, alpha 0.999, hard sampler
0.5) with the factors loss, alpha_e and hard_k; --eloss: the same base with loss=eloss_bce and the
hard sampler off, with the factors loss and alpha_e. Prints Markdown.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from results import SHARED
from scipy import stats

from hpa.data.labels import labels_matrix, read_folds, read_label_tables, read_labels
from hpa.training.losses import effective_number_weights

ALPHAS = (0.9, 0.99, 0.999)


def weight_spread(counts: np.ndarray) -> list[str]:
    rows = []
    for a in ALPHAS:
        w = effective_number_weights(counts, a)
        w = w / w.mean()  # as the loss normalises them
        rarest5 = np.sort(w)[-5:].sum() / w.sum()
        rows.append(f"| {a} | {w.max() / w.min():.1f} | {w[counts.argmax()]:.3f} | {w[counts.argmin()]:.2f} | "
                    f"{rarest5:.2f} |")
    return rows


def cells(results: pd.DataFrame, factor: str, variant: str) -> pd.Series:
    r = results[(results["factor"] == factor) & (results["variant"] == variant)]
    if r.empty:
        raise SystemExit(f"error: no rows for {factor}={variant}")
    return r.set_index(["seed", "fold"])["macro_f1"]


def mean_ci(v: pd.Series) -> str:
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return f"{v.mean():.4f} ± {half:.4f}"


def paired(a: pd.Series, b: pd.Series) -> str:
    d = (a - b.reindex(a.index)).dropna()
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    p = stats.ttest_rel(a.reindex(d.index), b.reindex(d.index)).pvalue
    return f"{d.mean():+.4f} ± {half:.4f} (p {p:.3f}{', significant' if abs(d.mean()) > half else ''})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--main", type=Path, required=True)
    ap.add_argument("--eloss", type=Path, required=True)
    ap.add_argument("--demo", type=Path, default=Path("data/demo"), help="the demo dataset")
    ap.add_argument("--folds", type=Path, default=Path("data/demo/folds_drop.csv"))
    a = ap.parse_args()

    demo = read_labels(a.demo / "train.csv")
    fold = read_folds(a.folds)
    train0 = labels_matrix(demo)[np.array([fold[i] == 1 for i in demo["Id"]])]  # fold 0's training rows
    print("### E-loss class weights (normalised to mean 1) on two sets of class counts\n")
    print("| alpha_e | largest / smallest weight | weight of the largest class | weight of the rarest class | "
          "share of all weight on the 5 rarest classes |\n|---|---|---|---|---|")
    n0 = train0.sum(0)
    print(f"| **demo, fold 0's {len(train0)} training samples (class counts {int(n0.min())} to {int(n0.max())})** "
          "| | | | |")
    print("\n".join(weight_spread(n0)))
    kaggle = SHARED / "kaggle-hpa-2018"
    if (kaggle / "train.csv").is_file():
        real = labels_matrix(read_label_tables([kaggle / "train.csv", kaggle / "HPAv18RBGY_wodpl.csv"])).sum(0) * 0.8
        print(f"| **Kaggle + HPAv18, a 5-fold training split (class counts {real.min():.0f} to {real.max():.0f})** "
              "| | | | |")
        print("\n".join(weight_spread(real)))

    m, e = pd.read_csv(a.main / "results.csv"), pd.read_csv(a.eloss / "results.csv")
    grid = {  # (loss, hard sampler) at alpha 0.999 -> cells
        ("bce", "0.5"): cells(m, "loss", "bce"), ("focal", "0.5"): cells(m, "loss", "focal"),
        ("eloss_bce", "0.5"): cells(m, "loss", "eloss_bce"),
        ("eloss_focal", "0.5"): cells(m, "baseline", "paper config"),
        ("bce", "off"): cells(e, "loss", "bce"), ("focal", "off"): cells(e, "loss", "focal"),
        ("eloss_bce", "off"): cells(e, "baseline", "paper config"), ("eloss_focal", "off"): cells(m, "hard_k", "off"),
    }
    print("\n### Loss x hard sampler (alpha_e 0.999), OOF macro F1, mean ± 95% CI over seeds x folds\n")
    print("| loss | hard sampler 0.5 | hard sampler off | hard sampler on - off |\n|---|---|---|---|")
    for loss in ("bce", "focal", "eloss_bce", "eloss_focal"):
        on, off = grid[(loss, "0.5")], grid[(loss, "off")]
        print(f"| {loss} | {mean_ci(on)} | {mean_ci(off)} | {paired(on, off)} |")
    print("\n### The E-loss weighting's own effect (E-loss variant - same loss unweighted), paired\n")
    print("| base loss | with the hard sampler 0.5 | without |\n|---|---|---|")
    for loss in ("bce", "focal"):
        print(f"| {loss} | {paired(grid[('eloss_' + loss, '0.5')], grid[(loss, '0.5')])} | "
              f"{paired(grid[('eloss_' + loss, 'off')], grid[(loss, 'off')])} |")
    print("\n### alpha_e, OOF macro F1 (difference to plain BCE with the same hard-sampler setting)\n")
    print("| alpha_e | eloss_focal, hard sampler 0.5 | eloss_bce, hard sampler off |\n|---|---|---|")
    for alpha in ALPHAS:
        ef = cells(m, "baseline", "paper config") if alpha == 0.999 else cells(m, "alpha_e", str(alpha))
        eb = cells(e, "baseline", "paper config") if alpha == 0.999 else cells(e, "alpha_e", str(alpha))
        print(f"| {alpha} | {mean_ci(ef)}: {paired(ef, grid[('bce', '0.5')])} | "
              f"{mean_ci(eb)}: {paired(eb, grid[('bce', 'off')])} |")


if __name__ == "__main__":
    main()
