"""Predict with test-time augmentation: OOF and test probabilities per fold, or a folder of images.

    python predict_tta.py --arch se_resnext50 --size 768 --folds 0 1 2 3 4 --sizes 768 1024 --tta 8
    python predict_tta.py --arch tiny_cnn --size 128 --folds 0 1 --images my_images/ --out my_predictions.csv
    python predict_tta.py --bundle my-bundle --images my_images/ --out my_predictions.csv

For each fold, the run's best.pt (rebuilt from the run's saved config) predicts the fold's
validation Ids (OOF) and the Ids of sample_submission.csv (test), after checking that the labels
and folds are those it was trained on: predictions/<arch>_<size>_f<fold>_{oof,test}.csv, each with
a .json sidecar, all written together once every fold has been predicted.
TTA: the probabilities (after the sigmoid) are averaged over the --tta dihedral transforms
(in this order: id, hflip, vflip, rot180, rot90, rot270, transpose, antitranspose) and over every
--sizes value. Images are seen whole at their stored side (768 px for 2048 px sources, 1024 px
for 3072 px ones in a 768 run); --sizes rescales them (e.g. --sizes 768 1024 adds a pass at 4/3).
With --images, every sample in the folder (`<Id>_red.<ext>` and its 3 sibling files, png, tif,
tiff, jpg or jpeg in either case) is predicted by all the given folds' models; unreadable samples
are listed and skipped. Writes probabilities and the predicted class names (thresholds from
--thresholds, else 0.5), and beside them report.html: the images with their stains and a class
activation map (Grad-CAM, averaged over folds and TTA views) for every predicted class.
"""

from __future__ import annotations

from pathlib import Path

from hpa import cli
from hpa.core.runtime import AMP_MODES
from hpa.data import layout
from hpa.errors import HPAError
from hpa.models import list_archs
from hpa.prediction.inference import DIHEDRAL, PredictOptions, predict_folds


def parse_args(argv: list[str] | None):
    ap = cli.Parser(__doc__)
    ap.add_argument("--arch", choices=list_archs(), help="the runs' arch")
    ap.add_argument("--size", type=cli.positive_int, help="the training size (names the run)")
    ap.add_argument("--bundle", help="with --images: predict with a bundle (export_bundle.py): a folder or a "
                    "Hugging Face repository id; its members, TTA, blend and thresholds are used")
    ap.add_argument("--folds", type=cli.non_negative_int, nargs="+", help="folds whose runs to use (default: 0)")
    ap.add_argument("--sizes", type=cli.positive_int, nargs="+",
                    help="inference sides for images stored at --size, larger stored images scaled alike "
                         "(default: --size, i.e. every image whole at its stored side)")
    ap.add_argument("--tta", help="dihedral transforms to average: a count 1..8 (the first N of the order above) or "
                    f"names, e.g. id,hflip,vflip (default: {len(DIHEDRAL)})")
    ap.add_argument("--data-dir", type=Path, help="dataset directory (default: the one each run was trained on)")
    ap.add_argument("--runs", type=Path, default=Path("runs"), help="runs root")
    ap.add_argument("--out-dir", type=Path, default=Path("predictions"), help="where prediction files go")
    ap.add_argument("--batch-size", type=cli.positive_int,
                    help=f"images per forward pass (default: {PredictOptions.batch_size})")
    ap.add_argument("--amp", choices=AMP_MODES, help=f"mixed precision (default: {PredictOptions.amp})")
    ap.add_argument("--workers", type=cli.non_negative_int, default=cli.DEFAULT_WORKERS,
                    help="DataLoader worker processes")
    ap.add_argument("--device", help=f"auto | cpu | cuda | cuda:N (default: {PredictOptions.device})")
    ap.add_argument("--images", type=Path, help="predict every sample in this folder instead")
    ap.add_argument("--ids", type=Path, help="with --images: a CSV whose Id column lists the samples")
    ap.add_argument("--thresholds", type=Path, help="with --images: thresholds JSON from find_thresholds.py")
    ap.add_argument("--out", type=Path, help=f"with --images: output CSV (default: {layout.IMAGE_PREDICTIONS})")
    ap.add_argument("--strict", action="store_true", help="with --images: fail if any sample cannot be read")
    ap.add_argument("--no-report", action="store_true", help="with --images: no report.html and no class maps")
    ap.add_argument("--explain", type=cli.class_index, nargs="+", default=[], metavar="K",
                    help="with --images: class maps for these classes too (every predicted class gets one)")
    return ap.parse_args(argv)


def predict_images(a, opts: PredictOptions) -> None:
    from hpa.api import predict_images

    r = predict_images(a.images, a.out, bundle=a.bundle, runs=a.runs, arch=a.arch, size=a.size, folds=a.folds,
                       thresholds=a.thresholds, ids=a.ids, strict=a.strict, report=not a.no_report,
                       explain=a.explain, opts=opts)
    print(f"wrote {r.n_predicted} predictions to {r.predictions}" + (f" and the report {r.report}" if r.report else "")
          + (f"; skipped {len(r.skipped)} (listed above)" if r.skipped else ""))


IMAGE_ONLY = ("bundle", "ids", "thresholds", "out", "strict", "no_report", "explain")
BUNDLE_HOLDS = ("arch", "size", "folds", "tta", "sizes", "thresholds")  # what a bundle carries itself


def check_flags(a) -> None:
    """Flags that mean nothing in the chosen mode are refused, never dropped."""
    flag = lambda k: "--" + k.replace("_", "-")  # noqa: E731
    given = [k for k in IMAGE_ONLY if getattr(a, k) not in (None, False, [])]
    if not a.images and given:
        raise HPAError(f"{', '.join(map(flag, given))}: only with --images DIR (predicting a folder of images)")
    held = [k for k in BUNDLE_HOLDS if a.bundle and getattr(a, k) is not None]
    if held:
        raise HPAError(f"{', '.join(map(flag, held))} with --bundle: the bundle carries its own members, folds, TTA "
                       "and thresholds")
    if not a.bundle and (a.arch is None or a.size is None):
        raise HPAError("--arch and --size are required (or --bundle with --images)")


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    check_flags(a)
    a.folds = a.folds if a.folds is not None else [0]
    a.out = a.out or Path(layout.IMAGE_PREDICTIONS)
    opts = PredictOptions.make(tta=a.tta, sizes=a.sizes, batch_size=a.batch_size, amp=a.amp,
                               workers=a.workers, device=a.device, flags=True)
    if a.images:
        predict_images(a, opts)
        return
    written = predict_folds(a.runs, a.arch, a.size, a.folds, a.out_dir, opts, data_dir=a.data_dir).write_all()
    for p in written:
        print(f"wrote {p}")


if __name__ == "__main__":
    cli.run(main)
