"""Blend the models' predictions, fit thresholds on the blended OOF, write a Kaggle submission.

    python blend.py --oof "work/hpa/predictions/*_oof.csv" --test "work/hpa/predictions/*_test.csv" \
        --data-dir data/hpa --out work/hpa/submission.csv

A model is named by its files, `<arch>_<size>_f<fold>_{oof,test}.csv`: its OOF files are
concatenated over folds, its test files averaged. OOF files made by predict_tta.py carry a sidecar
naming the labels and folds of their runs: models made against other labels or folds than each
other are refused, and OOF files that do not cover every Id of their folds are an error unless
--allow-missing-oof. Model weights (`--weights`):
- `equal`: the plain mean of probabilities; `logit`: the mean of logits;
- `greedy`: greedy ensemble selection with replacement (Caruana et al., ICML 2004);
- `bagged`: greedy selection on random halves of the models, averaged (Caruana et al. 2004);
- `auto` (default): the pair of weighting and threshold method that scores best in K-fold
  cross-validation inside the OOF rows (fit on K-1 parts, score the held-out part; the simplest
  pair within one standard error of the best), then fitted on all OOF rows. The report shows the
  cross-validated table and the choice.
Thresholds (`--method`: flat 0.5, paper, exact, shrink or auto) are fitted on the blended OOF; a
test sample with no class above threshold gets its class of highest probability/threshold ratio.
Writes the submission (Id,Predicted; every sample_submission Id once, labels ascending), and
report.md, report.png and blend.json beside it, all together.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from hpa import cli
from hpa.blending import (
    WEIGHTINGS,
    align,
    check_oof_provenance,
    choose_blend,
    concat_oof,
    cv_folds_for,
    expand,
    fit_blend,
    group_by_model,
    labels_for,
    mean_test,
    restrict,
    validate_submission,
)
from hpa.errors import ConfigError
from hpa.io import atomic_outputs, csv_text
from hpa.labels import format_target, labels_matrix, read_ids, read_labels
from hpa.metrics import macro_f1
from hpa.predictions import PredictionError
from hpa.report import markdown_table, per_class_frame, plot_per_class
from hpa.thresholds import METHODS, apply_thresholds, fit_thresholds, per_class_table


def parse_args(argv: list[str] | None):
    ap = cli.Parser(__doc__)
    ap.add_argument("--oof", nargs="+", default=["predictions/*_oof.csv"], help="OOF files or quoted globs")
    ap.add_argument("--test", nargs="+", default=["predictions/*_test.csv"], help="test files or quoted globs")
    ap.add_argument("--data-dir", type=Path, help="dataset directory: --labels and --sample-submission default to "
                                                  "its train.csv and sample_submission.csv")
    ap.add_argument("--labels", type=Path, nargs="+", help="Id,Target tables of the OOF rows (default "
                    "<data-dir>/train.csv, and external.csv if it exists)")
    ap.add_argument("--sample-submission", type=Path, help="test Ids (default <data-dir>/sample_submission.csv)")
    ap.add_argument("--test-labels", type=Path, help="Id,Target of the test set, to score the blend")
    ap.add_argument("--method", choices=[*METHODS, "auto"], default="auto", help="threshold method "
                    "(hpa/thresholds.py), or auto: chosen by cross-validation on the OOF rows")
    ap.add_argument("--weights", choices=[*WEIGHTINGS, "auto"], default="auto", help="model weights, or auto: "
                    "chosen by cross-validation on the OOF rows")
    ap.add_argument("--rounds", type=cli.positive_int, default=20, help="greedy selection rounds")
    ap.add_argument("--cv-folds", type=cli.positive_int, help="K of the cross-validation for auto (default: 10 "
                    "below 5,000 OOF rows, else 5)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the cross-validation splits and of bagging")
    ap.add_argument("--allow-missing-oof", action="store_true",
                    help="blend on the OOF rows present when some Ids of the folds have no OOF prediction")
    ap.add_argument("--out", type=Path, default=Path("submission.csv"), help="submission CSV")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    if not (a.labels and a.sample_submission) and not a.data_dir:
        raise ConfigError("--data-dir (or both --labels and --sample-submission) is needed: where are the labels "
                          "and the test Ids?")
    labels_csv = a.labels or [p for p in (a.data_dir / "train.csv", a.data_dir / "external.csv")
                              if p.name == "train.csv" or p.is_file()]
    sub_csv = a.sample_submission or a.data_dir / "sample_submission.csv"
    # every input is read and checked before the first output is written
    oof_files = expand(a.oof)
    notes = check_oof_provenance(oof_files, labels_csv, a.allow_missing_oof)
    oof_groups, test_groups = group_by_model(oof_files), group_by_model(expand(a.test))
    if set(oof_groups) != set(test_groups):
        raise PredictionError(f"models with OOF files {sorted(oof_groups)} differ from models with test files "
                              f"{sorted(test_groups)}")
    sub_ids = read_ids(sub_csv)
    names = list(oof_groups)
    per_model = {m: concat_oof(oof_groups[m]) for m in names}
    oof_ids = per_model[names[0]][0]
    if a.allow_missing_oof:  # the rows every model predicted
        common = set.intersection(*(set(ids) for ids, _ in per_model.values()))
        oof_ids = [i for i in oof_ids if i in common]
        per_model = {m: restrict(ids, p, common) for m, (ids, p) in per_model.items()}
    oofs = [align(*per_model[m], oof_ids, f"{m} OOF files {oof_groups[m][0]}...") for m in names]
    tests = [align(*mean_test(test_groups[m]), sub_ids, test_groups[m][0]) for m in names]
    y = labels_for(oof_ids, labels_csv)
    ty = None
    if a.test_labels:
        tl = read_labels(a.test_labels)
        ty = align(tl["Id"].tolist(), labels_matrix(tl), sub_ids, a.test_labels)

    cv_table = None
    weighting, method = a.weights, a.method
    if "auto" in (a.weights, a.method):
        k = a.cv_folds or cv_folds_for(len(y))
        if k < 2:
            raise ConfigError(f"--cv-folds {k}: auto needs at least 2")
        (weighting, method), cv_table = choose_blend(
            oofs, y, list(WEIGHTINGS) if a.weights == "auto" else [a.weights],
            list(METHODS) if a.method == "auto" else [a.method], k=k, rounds=a.rounds, seed=a.seed)
    fitted = fit_blend(oofs, y, weighting, method, a.rounds, a.seed)
    w, thr = fitted.weights, fitted.thresholds
    oof, test = fitted.combine(oofs), fitted.combine(tests)
    pred = apply_thresholds(test, thr)
    sub = pd.DataFrame({"Id": sub_ids, "Predicted": [format_target(np.flatnonzero(r)) for r in pred]})
    validate_submission(sub, sub_ids, a.out)

    singles = {m: macro_f1(y, o >= fit_thresholds(o, y, method)) for m, o in zip(names, oofs)}
    summary = {"models": names, "weighting": weighting, "weights": [float(v) for v in w], "threshold_method": method,
               "thresholds": [float(t) for t in thr], "oof_rows": len(oof_ids),
               "oof_macro_f1_at_0.5": macro_f1(y, oof >= 0.5), "oof_macro_f1": macro_f1(y, oof >= thr),
               "oof_macro_f1_filled": macro_f1(y, apply_thresholds(oof, thr)),
               "single_model_oof_macro_f1": singles, "notes": notes}
    table = per_class_frame(per_class_table(oof, y, thr))
    if ty is not None:
        summary["test_macro_f1"] = macro_f1(ty, pred)
        table["test_f1"] = per_class_table(test, ty, thr)["f1"]
    report, png = a.out.with_name("report.md"), a.out.with_name("report.png")
    lines = ["# Blend report", "", "| model | weight | OOF macro F1 (own thresholds) |", "|---|---|---|"]
    lines += [f"| {m} | {wi:.3f} | {singles[m]:.4f} |" for m, wi in zip(names, w)]
    lines += ["", f"Blended OOF macro F1 over {len(oof_ids)} rows: {summary['oof_macro_f1_at_0.5']:.4f} at 0.5, "
              f"{summary['oof_macro_f1']:.4f} with {method} thresholds "
              f"({summary['oof_macro_f1_filled']:.4f} when empty rows get their closest class)."]
    if "test_macro_f1" in summary:
        lines.append(f"Test macro F1 (against {a.test_labels}): {summary['test_macro_f1']:.4f}.")
    lines += [f"Note: {n}." for n in notes]
    if cv_table is not None:
        summary["cross_validation"] = cv_table.to_dict(orient="records")
        lines += ["", f"## Choice of weights and thresholds: {weighting} + {method}", "",
                  f"{k}-fold cross-validation inside the {len(oof_ids)} OOF rows "
                  f"({cv_table['n_scores'][0] // k} repeat(s)): each pair is fitted on {k - 1} parts "
                  "and scored (macro F1, empty rows filled) on the held-out part; mean and standard error over the "
                  "held-out parts. Chosen: the simplest pair whose shortfall to the best pair, on the same "
                  "held-out parts, is within one standard error (the one-standard-error rule, paired), then fitted "
                  "on all OOF rows.", "",
                  markdown_table(cv_table, floatfmt=".4f")]
    lines += ["", f"![per-class F1]({png.name})", "", markdown_table(table)]
    with atomic_outputs() as tmp:  # the submission and its report appear together or not at all
        tmp(a.out).write_text(csv_text(sub))
        plot_per_class(table, tmp(png), f"blend: OOF per-class F1 and thresholds (macro "
                       f"{summary['oof_macro_f1']:.3f})")
        tmp(report).write_text("\n".join(lines) + "\n")
        tmp(a.out.with_name("blend.json")).write_text(json.dumps(summary, indent=1))
    for n in notes:
        print(f"note: {n}")
    if cv_table is not None:
        best = cv_table[cv_table["chosen"]].iloc[0]
        print(f"auto: {weighting} weights + {method} thresholds (cross-validated macro F1 {best['cv_macro_f1']:.4f} "
              f"+- {best['std_error']:.4f}; table in {report})")
    print(f"models {names} weights {np.round(w, 3).tolist()}; OOF macro F1 {summary['oof_macro_f1']:.4f}")
    if "test_macro_f1" in summary:
        print(f"TEST MACRO F1: {summary['test_macro_f1']:.4f}")
    print(f"submission: {a.out}\nreport: {report}")


if __name__ == "__main__":
    cli.run(main)
