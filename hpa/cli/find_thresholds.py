r"""Per-class thresholds that maximise macro F1 on out-of-fold predictions, or for a bundle on your
own labelled images.

    python find_thresholds.py --oof "predictions/se_resnext50_768_f*_oof.csv" --labels data/hpa/train.csv \
        --method exact --out thresholds.json
    python find_thresholds.py --bundle bestfitting-2018 --images my_images/ --labels my_labels.csv \
        --out my_thresholds.json

The OOF files (quoted globs or paths) of the folds of one model are concatenated. With --bundle, the
images the labels table lists are predicted by the bundle and the thresholds fitted on them; pass
the JSON to predict_tta.py --bundle ... --thresholds. Methods: see
hpa/prediction/thresholds.py (`paper`: global grid then greedy per class; `exact`: each class's
optimum over every cut point; `shrink` (default): exact pulled toward the global value for rare
classes; `flat`: 0.5). Writes the JSON (thresholds, macro F1), a per-class CSV and a PNG beside it.
"""

from __future__ import annotations

from pathlib import Path

from hpa import api
from hpa.cli import Parser, options
from hpa.data import layout
from hpa.errors import ConfigError
from hpa.prediction.thresholds import DEFAULT_METHOD, METHODS


def build_parser() -> Parser:
    ap = Parser(__doc__, "find_thresholds.py")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--oof", nargs="+", help="OOF prediction files or quoted globs")
    src.add_argument("--bundle", help="a bundle (a folder, a published model's name or a Hub id) to fit on --images")
    options.images(ap)
    ap.add_argument("--labels", type=Path, nargs="+", required=True,
                    help="Id,Target tables of the OOF rows (train.csv, and external.csv if the runs used it), or "
                         "with --bundle the one table of the labelled --images")
    ap.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD, help="threshold method")
    ap.add_argument("--allow-missing-oof", action="store_true",
                    help="fit on the OOF rows present when some Ids of the folds have no OOF prediction")
    options.out(ap, "thresholds JSON (its CSV and PNG beside it)", default=Path(layout.THRESHOLDS))
    return ap


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    if bool(a.bundle) != bool(a.images):
        raise ConfigError("--bundle and --images go together (fit a bundle's thresholds on labelled images)")
    if a.bundle:
        if a.allow_missing_oof:
            raise ConfigError("--allow-missing-oof: only with --oof")
        fit = api.fit_bundle_thresholds(a.bundle, a.images, a.labels, method=a.method)
    else:
        fit = api.fit_thresholds(a.oof, a.labels, method=a.method, allow_missing=a.allow_missing_oof)
    fit.write(a.out)
    result = fit.summary
    for n in fit.notes:
        print(f"note: {n}")
    print(fit.table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    what = "Macro F1 of the bundle" if a.bundle else "OOF macro F1"
    print(f"{what}: {result['macro_f1_at_0.5']:.4f} at 0.5 -> {result['macro_f1']:.4f} with {a.method} "
          f"thresholds ({result['macro_f1_filled']:.4f} when empty rows get their best class). Wrote {a.out}")


if __name__ == "__main__":
    from hpa.cli import run

    run(main)
