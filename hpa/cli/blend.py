r"""Blend the models' predictions, fit thresholds on the blended OOF, write a Kaggle submission.

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

from pathlib import Path

import numpy as np

from hpa import api
from hpa.cli import Parser, options
from hpa.data import layout
from hpa.prediction.blending import WEIGHTINGS
from hpa.prediction.thresholds import METHODS


def build_parser() -> Parser:
    ap = Parser(__doc__, "blend.py")
    preds = layout.DEFAULT_PREDICTIONS
    ap.add_argument("--oof", nargs="+", default=[layout.prediction_glob(preds, "oof")],
                    help="OOF files or quoted globs")
    ap.add_argument("--test", nargs="+", default=[layout.prediction_glob(preds, "test")],
                    help="test files or quoted globs")
    options.data_dir(ap, required=False, help="dataset directory: --labels and --sample-submission default to its "
                     "train.csv (and external.csv) and sample_submission.csv")
    ap.add_argument("--labels", type=Path, nargs="+", help="Id,Target tables of the OOF rows")
    ap.add_argument("--sample-submission", type=Path, help="the test Ids")
    ap.add_argument("--test-labels", type=Path, help="Id,Target of the test set, to score the blend")
    ap.add_argument("--method", choices=[*METHODS, "auto"], default="auto", help="threshold method "
                    "(hpa/prediction/thresholds.py), or auto: chosen by cross-validation on the OOF rows")
    ap.add_argument("--weights", choices=[*WEIGHTINGS, "auto"], default="auto", help="model weights, or auto: "
                    "chosen by cross-validation on the OOF rows")
    ap.add_argument("--rounds", type=options.positive_int, default=20, help="greedy selection rounds")
    ap.add_argument("--cv-folds", type=options.positive_int, help="K of the cross-validation for auto [10 below "
                    "5,000 OOF rows, else 5]")
    options.seed(ap, "seed of the cross-validation splits and of bagging")
    ap.add_argument("--allow-missing-oof", action="store_true",
                    help="blend on the OOF rows present when some Ids of the folds have no OOF prediction")
    options.out(ap, "submission CSV (report.md, report.png and blend.json beside it)", default=Path(layout.SUBMISSION))
    return ap


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    s = api.blend(a.oof, a.test, a.data_dir, a.out, labels=a.labels, sample_submission=a.sample_submission,
                  test_labels=a.test_labels, method=a.method, weights=a.weights, rounds=a.rounds,
                  cv_folds=a.cv_folds, seed=a.seed, allow_missing=a.allow_missing_oof)
    for n in s["notes"]:
        print(f"note: {n}")
    report = layout.blend_outputs(a.out)["report"]
    if "chosen_cv" in s:
        print(f"auto: {s['weighting']} weights + {s['threshold_method']} thresholds (cross-validated macro F1 "
              f"{s['chosen_cv'][0]:.4f} +- {s['chosen_cv'][1]:.4f}; table in {report})")
    print(f"models {s['models']} weights {np.round(s['weights'], 3).tolist()}; OOF macro F1 {s['oof_macro_f1']:.4f}")
    if "test_macro_f1" in s:
        print(f"TEST MACRO F1: {s['test_macro_f1']:.4f}")
    print(f"submission: {a.out}\nreport: {report}")


if __name__ == "__main__":
    from hpa.cli import run

    run(main)
