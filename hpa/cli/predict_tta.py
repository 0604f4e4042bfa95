"""Predict with test-time augmentation: OOF and test probabilities per fold, or a folder of images.

    python predict_tta.py --arch se_resnext50 --size 768 --folds 0 1 2 3 4 --sizes 768 1024 --tta 8
    python predict_tta.py --arch tiny_cnn --size 128 --folds 0 1 --images my_images/ --out my_predictions.csv
    python predict_tta.py --bundle my-bundle --images my_images/ --out my_predictions.csv

For each fold, the run's best.pt (rebuilt from the run's saved config) predicts the fold's
validation Ids (OOF) and the Ids of sample_submission.csv (test), after checking that the labels
and folds are those it was trained on: predictions/<arch>_<size>_f<fold>_{oof,test}.csv, each with
a .json sidecar, all written together once every fold has been predicted.
TTA: the probabilities (after the sigmoid) are averaged over the --tta dihedral transforms and over
every --sizes value. Images are seen whole at their stored side (768 px for 2048 px sources, 1024
px for 3072 px ones in a 768 run); --sizes rescales them (e.g. --sizes 768 1024 adds a pass at 4/3).
With --images, every sample in the folder (`<Id>_red.<ext>` and its 3 sibling files, png, tif,
tiff, jpg or jpeg in either case) is predicted by all the given folds' models, or by a bundle's
members; unreadable samples are listed and skipped. Writes probabilities and the predicted class
names (thresholds from --thresholds, else 0.5), and beside them report.html: the images with their
stains and a class activation map (Grad-CAM, averaged over folds and TTA views) for every predicted
class, the known classes beside the predicted ones with --labels, and the cells with --cells.
"""

from __future__ import annotations

from pathlib import Path

from hpa import api
from hpa.cli import Parser, options
from hpa.data import layout
from hpa.errors import ConfigError
from hpa.models import list_archs
from hpa.prediction.cells import SEGMENTERS
from hpa.prediction.cells import methods as cell_methods

IMAGE_ONLY = ("bundle", "ids", "thresholds", "out", "strict", "no_report", "explain", "classes", "cells",
              "labels")  # with --images only
CELLS_ONLY = ("segmenter", "masks")  # with --cells only
BUNDLE_HOLDS = ("arch", "size", "folds", "sizes", "amp")  # a bundle carries these; --tta, --thresholds replace its own
RUNS_ONLY = ("data_dir",)  # OOF and test prediction of runs, not a folder


def build_parser() -> Parser:
    ap = Parser(__doc__, "predict_tta.py")
    ap.add_argument("--arch", choices=list_archs(), help="the runs' arch")
    ap.add_argument("--size", type=options.positive_int, help="the training size (names the run)")
    ap.add_argument("--bundle", help="with --images: predict with a bundle: a folder (export_bundle.py), a published "
                    "model (bestfitting-2018) or a Hugging Face repository id; its members, TTA, blend and "
                    "thresholds are used unless --tta / --thresholds replace them")
    options.folds(ap, "folds whose runs predict [0]")
    ap.add_argument("--sizes", type=options.positive_int, nargs="+", metavar="SIDE",
                    help="inference sides for images stored at --size, larger stored images scaled alike "
                         "[--size: every image whole at its stored side]")
    options.tta(ap)
    options.data_dir(ap, required=False, help="dataset directory [the one each run was trained on]")
    options.runs(ap)
    options.out_dir(ap, "where the OOF and test prediction files go", default=layout.DEFAULT_PREDICTIONS)
    options.batch_size(ap)
    options.amp(ap)
    options.workers(ap)
    options.device(ap)
    options.images(ap)
    ap.add_argument("--ids", type=Path, help="with --images: a CSV whose Id column lists the samples")
    ap.add_argument("--thresholds", type=Path, help="with --images: thresholds JSON from find_thresholds.py")
    options.out(ap, f"with --images: the predictions CSV [{layout.IMAGE_PREDICTIONS}]")
    ap.add_argument("--classes", choices=["kaggle2018"], help="with --images: write the probabilities as the Kaggle 28 "
                    "columns (a published model of another class set mapped where the classes agree; the others "
                    "left empty) [the model's own classes]")
    ap.add_argument("--cells", nargs="?", const="maps", choices=cell_methods(), metavar="METHOD",
                    help="with --images: also every cell, predicted from the class maps (maps, the default), by the "
                         "model on its crop (crops) or by the 2021 winner's cell model (bestfitting-2021); "
                         "cells.csv, cell_masks/ and the 2021 competition's cell_submission.csv beside --out")
    ap.add_argument("--segmenter", choices=list(SEGMENTERS),
                    help="with --cells: how fields are cut into cells: watershed (no weights needed) or hpa (the "
                         "HPA's nucleus and cell U-Nets, downloaded once) [watershed]")
    ap.add_argument("--masks", type=Path, metavar="DIR",
                    help="with --cells: your own label masks instead of a segmenter, <Id>.png or .tif per image "
                         "(0 background, 1..n cells)")
    ap.add_argument("--labels", type=Path, help="with --images: an Id,Target CSV of the classes known for some or all "
                    "of the images (Kaggle 2018 numbers), shown beside the predicted ones in the report")
    ap.add_argument("--strict", action="store_true", help="with --images: fail if any sample cannot be read")
    ap.add_argument("--no-report", action="store_true", help="with --images: no report.html and no class maps")
    ap.add_argument("--explain", type=options.class_index, nargs="+", default=[], metavar="K",
                    help="with --images: class maps for these classes too (every predicted class gets one)")
    return ap


def check_flags(a) -> None:
    """Flags that mean nothing in the chosen mode are refused, never dropped."""
    def given(keys):
        return [f"--{k.replace('_', '-')}" for k in keys if getattr(a, k) not in (None, False, [])]
    if not a.images and given(IMAGE_ONLY):
        raise ConfigError(f"{', '.join(given(IMAGE_ONLY))}: only with --images DIR (predicting a folder of images)")
    if a.images and given(RUNS_ONLY):
        raise ConfigError(f"{', '.join(given(RUNS_ONLY))} with --images: the folder is the data")
    if a.bundle and (given(BUNDLE_HOLDS) or a.runs != layout.DEFAULT_RUNS):
        raise ConfigError(f"{', '.join(given(BUNDLE_HOLDS) or ['--runs'])} with --bundle: the bundle carries its own "
                          "members, folds, sides and precision")
    if not a.cells and given(CELLS_ONLY):
        raise ConfigError(f"{', '.join(given(CELLS_ONLY))}: only with --cells (predicting every cell)")
    if a.segmenter and a.masks:
        raise ConfigError("--segmenter with --masks: the masks are the cells; give one of them")
    if not a.bundle and (a.arch is None or a.size is None):
        raise ConfigError("--arch and --size are required (or --bundle with --images)")


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    check_flags(a)
    loader = dict(batch_size=a.batch_size, workers=a.workers, device=a.device)
    views = {k: v for k, v in dict(tta=a.tta, sizes=a.sizes, amp=a.amp).items() if v is not None}
    if not a.images:
        for p in api.predict(a.arch, a.size, a.folds or [0], runs=a.runs, out_dir=a.out_dir, data_dir=a.data_dir,
                             **views, **loader):
            print(f"wrote {p}")
        return
    runs = None if a.bundle else api.Runs(a.arch, a.size, tuple(a.folds or [0]), a.runs, a.thresholds)
    out = a.out or Path(layout.IMAGE_PREDICTIONS)
    if a.cells:  # the cell stage's inputs, outputs and weights, before any image is predicted
        api.check_cells(a.images, out, ids=a.ids, method=a.cells, segmenter=a.segmenter or "watershed", masks=a.masks)
    r = api.predict_images(a.images, out, bundle=a.bundle, runs=runs, ids=a.ids,
                           strict=a.strict, report=False if a.no_report else a.explain,
                           thresholds=a.thresholds if a.bundle else None, classes=a.classes, labels=a.labels,
                           **views, **loader)
    print(f"wrote {r.n_predicted} predictions to {r.predictions}" + (f" and the report {r.report}" if r.report else "")
          + (f"; skipped {len(r.skipped)} (listed above)" if r.skipped else ""))
    stale = [p for p in layout.cell_outputs(r.predictions).values() if p.exists()]
    if stale and not a.cells:  # the cell stage would renew them; without it they describe earlier predictions
        print(f"note: {', '.join(p.name for p in stale)} beside {r.predictions.name} are from an earlier --cells run "
              "and do not describe these predictions; run with --cells to renew them")
    if a.cells:
        # with a bundle, check_flags refused --sizes and --amp: views holds at most the user's --tta
        api.predict_cells(a.images, r.predictions, bundle=a.bundle, runs=runs, method=a.cells,
                          segmenter=a.segmenter or "watershed", masks=a.masks, **views, **loader)


if __name__ == "__main__":
    from hpa.cli import run

    run(main)
