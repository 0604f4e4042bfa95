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

from pathlib import Path

import numpy as np

from hpa import cli
from hpa.data import layout
from hpa.errors import ConfigError
from hpa.prediction.blending import WEIGHTINGS, blend_outputs, expand, run_blend
from hpa.prediction.thresholds import METHODS


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
                    "(hpa/prediction/thresholds.py), or auto: chosen by cross-validation on the OOF rows")
    ap.add_argument("--weights", choices=[*WEIGHTINGS, "auto"], default="auto", help="model weights, or auto: "
                    "chosen by cross-validation on the OOF rows")
    ap.add_argument("--rounds", type=cli.positive_int, default=20, help="greedy selection rounds")
    ap.add_argument("--cv-folds", type=cli.positive_int, help="K of the cross-validation for auto (default: 10 "
                    "below 5,000 OOF rows, else 5)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the cross-validation splits and of bagging")
    ap.add_argument("--allow-missing-oof", action="store_true",
                    help="blend on the OOF rows present when some Ids of the folds have no OOF prediction")
    ap.add_argument("--out", type=Path, default=Path(layout.SUBMISSION), help="submission CSV")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    if not (a.labels and a.sample_submission) and not a.data_dir:
        raise ConfigError("--data-dir (or both --labels and --sample-submission) is needed: where are the labels "
                          "and the test Ids?")
    s = run_blend(expand(a.oof), expand(a.test), a.labels or layout.label_tables(a.data_dir),
                  a.sample_submission or layout.split_table(a.data_dir, "test"), a.out, test_labels=a.test_labels,
                  method=a.method, weights=a.weights, rounds=a.rounds, cv_folds=a.cv_folds, seed=a.seed,
                  allow_missing=a.allow_missing_oof, folds_csv=layout.folds_csv(a.data_dir) if a.data_dir else None)
    for n in s["notes"]:
        print(f"note: {n}")
    report = blend_outputs(a.out)["report"]
    if "chosen_cv" in s:
        print(f"auto: {s['weighting']} weights + {s['threshold_method']} thresholds (cross-validated macro F1 "
              f"{s['chosen_cv'][0]:.4f} +- {s['chosen_cv'][1]:.4f}; table in {report})")
    print(f"models {s['models']} weights {np.round(s['weights'], 3).tolist()}; OOF macro F1 {s['oof_macro_f1']:.4f}")
    if "test_macro_f1" in s:
        print(f"TEST MACRO F1: {s['test_macro_f1']:.4f}")
    print(f"submission: {a.out}\nreport: {report}")


if __name__ == "__main__":
    cli.run(main)
