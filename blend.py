"""Blend the models' predictions, fit thresholds on the blended OOF, write a Kaggle submission.

    python blend.py                               # everything in predictions/, data from data/demo
    python blend.py --oof "predictions/*_oof.csv" --test "predictions/*_test.csv" \
        --labels data/hpa/train.csv --sample-submission data/hpa/sample_submission.csv --out submission.csv

A model is named by its files, `<arch>_<size>_f<fold>_{oof,test}.csv`: its OOF files are
concatenated over folds, its test files averaged. Model weights (`--weights`):
- `equal`: the plain mean;
- `greedy`: greedy ensemble selection with replacement (Caruana et al., ICML 2004): start from
  the best single model and repeatedly add the model whose inclusion gives the highest OOF macro
  F1 at thresholds fitted by `--method`, for `--rounds` rounds; weights are the selection counts.
  On small OOF sets the weights overfit: on the 258 labelled rows of real 2018 predictions the
  plain mean scored higher on held-out rows (bench/RESULTS.md); prefer `equal` there.
Thresholds (`--method`) are then fitted on the blended OOF; a test sample with no class above
threshold gets its class of highest probability/threshold ratio (every sample has a label).
Writes the submission (Id,Predicted; every sample_submission Id once, labels ascending), and
report.md + report.png beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from hpa.blending import align, concat_oof, expand, group_by_model, labels_for, mean_test
from hpa.io import atomic_write_csv, atomic_write_text
from hpa.labels import LabelError, format_target, labels_matrix, read_ids, read_labels
from hpa.metrics import macro_f1
from hpa.predictions import PredictionError
from hpa.report import markdown_table, per_class_frame, plot_per_class
from hpa.thresholds import METHODS, apply_thresholds, fit_thresholds, per_class_table


def greedy_weights(oofs: list[np.ndarray], y: np.ndarray, rounds: int, method: str = "shrink") -> np.ndarray:
    """Selection counts of the best-scoring round (so never below the best single model)."""
    def score(p: np.ndarray) -> float:
        return macro_f1(y, p >= fit_thresholds(p, y, method))

    counts = np.zeros(len(oofs))
    total = np.zeros_like(oofs[0])
    best, best_counts = -1.0, None
    for _ in range(rounds):
        scores = [score((total + o) / (counts.sum() + 1)) for o in oofs]
        k = int(np.argmax(scores))
        counts[k] += 1
        total += oofs[k]
        if scores[k] > best:
            best, best_counts = scores[k], counts.copy()
    return best_counts / best_counts.sum()


def validate_submission(sub: pd.DataFrame, expected: list[str], path: Path) -> None:
    if list(sub["Id"]) != expected:
        raise PredictionError(f"{path}: submission Ids differ from sample_submission")
    for i, t in enumerate(sub["Predicted"]):
        parts = t.split()
        if not parts or [int(v) for v in parts] != sorted({int(v) for v in parts}) or any(
                not 0 <= int(v) < 28 for v in parts):
            raise PredictionError(f"{path}, row {i + 2}: bad Predicted {t!r}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--oof", nargs="+", default=["predictions/*_oof.csv"])
    ap.add_argument("--test", nargs="+", default=["predictions/*_test.csv"])
    ap.add_argument("--data-dir", type=Path, default=Path("data/demo"),
                    help="where --labels and --sample-submission default to")
    ap.add_argument("--labels", type=Path, help="Id,Target (default <data-dir>/train.csv)")
    ap.add_argument("--sample-submission", type=Path, help="default <data-dir>/sample_submission.csv")
    ap.add_argument("--test-labels", type=Path, help="optional Id,Target of the test set, to score the blend")
    ap.add_argument("--method", choices=METHODS, default="shrink", help="threshold method (hpa/thresholds.py)")
    ap.add_argument("--weights", choices=["greedy", "equal"], default="greedy")
    ap.add_argument("--rounds", type=int, default=20, help="greedy selection rounds")
    ap.add_argument("--out", type=Path, default=Path("submission.csv"))
    a = ap.parse_args(argv)
    labels_csv = a.labels or a.data_dir / "train.csv"
    sub_csv = a.sample_submission or a.data_dir / "sample_submission.csv"
    try:
        oof_groups = group_by_model(expand(a.oof))
        test_groups = group_by_model(expand(a.test))
        if set(oof_groups) != set(test_groups):
            raise PredictionError(f"models with OOF files {sorted(oof_groups)} differ from models with test files "
                                  f"{sorted(test_groups)}")
        sub_ids = read_ids(sub_csv)
        names = list(oof_groups)
        oof_ids = None
        oofs, tests = [], []
        for m in names:
            ids, p = concat_oof(oof_groups[m])
            if oof_ids is None:
                oof_ids = ids
            oofs.append(align(ids, p, oof_ids, f"{m} OOF files {oof_groups[m][0]}..."))
            tids, tp = mean_test(test_groups[m])
            tests.append(align(tids, tp, sub_ids, test_groups[m][0]))
        y = labels_for(oof_ids, labels_csv)
    except (PredictionError, LabelError) as e:
        sys.exit(f"error: {e}")

    w = greedy_weights(oofs, y, a.rounds, a.method) if a.weights == "greedy" and len(oofs) > 1 else \
        np.full(len(oofs), 1 / len(oofs))
    oof = sum(wi * o for wi, o in zip(w, oofs))
    test = sum(wi * t for wi, t in zip(w, tests))
    thr = fit_thresholds(oof, y, a.method)
    pred = apply_thresholds(test, thr)
    sub = pd.DataFrame({"Id": sub_ids, "Predicted": [format_target(np.flatnonzero(r)) for r in pred]})
    validate_submission(sub, sub_ids, a.out)
    atomic_write_csv(a.out, sub)

    singles = {m: macro_f1(y, o >= fit_thresholds(o, y, a.method)) for m, o in zip(names, oofs)}
    summary = {"models": names, "weights": [float(v) for v in w], "threshold_method": a.method,
               "thresholds": [float(t) for t in thr], "oof_macro_f1_at_0.5": macro_f1(y, oof >= 0.5),
               "oof_macro_f1": macro_f1(y, oof >= thr), "oof_macro_f1_filled": macro_f1(y, apply_thresholds(oof, thr)),
               "single_model_oof_macro_f1": singles}
    table = per_class_frame(per_class_table(oof, y, thr))
    if a.test_labels:
        tl = read_labels(a.test_labels)
        ty = align(tl["Id"].tolist(), labels_matrix(tl), sub_ids, a.test_labels)
        summary["test_macro_f1"] = macro_f1(ty, pred)
        table["test_f1"] = per_class_table(test, ty, thr)["f1"]
    report = a.out.with_name("report.md")
    png = a.out.with_name("report.png")
    plot_per_class(table, png, f"blend: OOF per-class F1 and thresholds (macro {summary['oof_macro_f1']:.3f})")
    lines = ["# Blend report", "", "| model | weight | OOF macro F1 (own thresholds) |", "|---|---|---|"]
    lines += [f"| {m} | {wi:.3f} | {singles[m]:.4f} |" for m, wi in zip(names, w)]
    lines += ["", f"Blended OOF macro F1: {summary['oof_macro_f1_at_0.5']:.4f} at 0.5, "
              f"{summary['oof_macro_f1']:.4f} with {a.method} thresholds "
              f"({summary['oof_macro_f1_filled']:.4f} when empty rows get their closest class)."]
    if "test_macro_f1" in summary:
        lines.append(f"Test macro F1 (against {a.test_labels}): {summary['test_macro_f1']:.4f}.")
    lines += ["", f"![per-class F1]({png.name})", "", markdown_table(table)]
    atomic_write_text(report, "\n".join(lines) + "\n")
    atomic_write_text(a.out.with_name("blend.json"), json.dumps(summary, indent=1))
    print(f"models {names} weights {np.round(w, 3).tolist()}; OOF macro F1 {summary['oof_macro_f1']:.4f}")
    if "test_macro_f1" in summary:
        print(f"TEST MACRO F1: {summary['test_macro_f1']:.4f}")
    print(f"submission: {a.out}\nreport: {report}")


if __name__ == "__main__":
    main()
