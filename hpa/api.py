"""The toolkit from Python (a notebook, a script of your own), from any directory once the project
is installed (`pip install .`): the same steps as the command-line scripts, as functions.

    import hpa
    hpa.prepare("data/demo", size=128)
    hpa.make_folds("data/demo", n_folds=2)
    run = hpa.train_fold("tiny_cnn", fold=0, size=128, data_dir="data/demo", epochs=2)
    files = hpa.predict("tiny_cnn", size=128, folds=[0, 1], tta=2)
    fit = hpa.fit_thresholds("predictions/tiny_cnn_128_f*_oof.csv", data_dir="data/demo")  # .thresholds
    summary = hpa.blend("predictions/*_oof.csv", "predictions/*_test.csv", data_dir="data/demo",
                        out="submission.csv")

Settings of `train_fold` are TrainConfig keys (`epochs=2`, `model={"head_hidden": []}`) over the
arch's shipped config, as `--set` on the command line. Errors are `hpa.errors.HPAError`s with a
one-line message. No call writes over one of its own inputs: each declares what it reads
(hpa.core.atomic.reading) and every writer refuses those paths.
"""

from __future__ import annotations

import functools
import inspect
import numbers
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpa.core.atomic import reading
from hpa.core.checks import require_dir
from hpa.core.values import count
from hpa.data import layout
from hpa.errors import ConfigError
from hpa.prediction.thresholds import DEFAULT_METHOD


def accepts(value: object, hint: object) -> bool:
    """Whether `value` is of the annotated type `hint` (unions, None, Literal, sequences and callables
    included; a list annotation takes any sequence but a string; what cannot be checked passes)."""
    origin = typing.get_origin(hint)
    if hint in (typing.Any, inspect.Parameter.empty):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(accepts(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is None or hint is type(None):
        return value is None
    hint = origin or hint
    if hint in (list, tuple, Sequence):
        return isinstance(value, Sequence) and not isinstance(value, str)
    if hint is Callable:
        return callable(value)
    if hint in (int, float):
        return isinstance(value, numbers.Integral if hint is int else numbers.Real) and not isinstance(value, bool)
    return not isinstance(hint, type) or isinstance(value, hint)


def checked(fn: Callable) -> Callable:
    """A misspelt or missing argument, or one of another type than its annotation, is an HPAError
    naming the function and the argument, as a bad value is."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as e:
            params = ", ".join(p for p in sig.parameters if p not in ("settings", "options"))
            raise ConfigError(f"hpa.{fn.__name__}(): {e} (its arguments: {params})") from None
        hints = typing.get_type_hints(fn)
        for name, value in bound.arguments.items():
            kind = sig.parameters[name].kind
            if kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL) and name in hints \
                    and not accepts(value, hints[name]):
                hint = hints[name]
                want = hint.__name__ if isinstance(hint, type) else str(hint).replace("pathlib.", "").replace(
                    "typing.", "").replace("hpa.api.", "hpa.")
                raise ConfigError(f"hpa.{fn.__name__}(): {name}={value!r}: expected {want}")
        return fn(*args, **kwargs)
    return call


def _fold_list(folds) -> list[int]:
    if isinstance(folds, int | np.integer) and not isinstance(folds, bool):
        raise ConfigError(f"folds={folds!r}: a list of fold numbers, e.g. folds=[{folds}]")
    try:
        out = [int(f) for f in folds]
    except (TypeError, ValueError):
        raise ConfigError(f"folds={folds!r}: a list of fold numbers, e.g. [0, 1]") from None
    if not out or any(isinstance(f, bool) or int(f) != f or f < 0 for f in folds):
        raise ConfigError(f"folds={folds!r}: a non-empty list of fold numbers >= 0")
    return out


def _tables(labels) -> list[Path]:
    """One label table or several: a str or Path is one file, never a sequence of characters."""
    if isinstance(labels, str | Path):
        return [Path(labels)]
    return [Path(p) for p in labels]


def _paths(files: str | Path | list) -> list[Path]:
    from hpa.prediction.blending import expand

    return expand([str(f) for f in ([files] if isinstance(files, str | Path) else files)])


def _test_time(fn: str, settings: dict):
    """PredictOptions from the keyword arguments left over by `fn`; an unknown one names `fn`."""
    from hpa.prediction.inference import PredictOptions

    if settings.get("labels") is not None and fn != "predict_images":
        raise ConfigError(f"hpa.{fn}(): labels= goes with hpa.predict_images (the known classes its report shows)")
    try:
        return PredictOptions.make(**settings)
    except TypeError:
        raise ConfigError(f"hpa.{fn}(): unknown argument(s) {', '.join(sorted(settings))} (test-time settings: tta, "
                          "sizes, batch_size, amp, workers, device, classes, labels)") from None


@checked
def prepare(data_dir: str | Path, size: int, *, large_size: int | None = None, splits: list[str] | None = None,
            workers: int = 1, shard: tuple[int, int] = (0, 1), echo: Callable[[str], None] = print) -> dict:
    """Resize every sample of the dataset once to `size` (hpa.data.preparation); returns the failures per split."""
    from hpa.data.preparation import prepare_dataset

    return prepare_dataset(require_dir(Path(data_dir), "data_dir"), count("size", size, 8),
                           None if large_size is None else count("large_size", large_size, 8),
                           tuple(splits or layout.SPLIT_TABLES), count("workers", workers), shard, echo=echo)


@checked
def find_duplicates(data_dir: str | Path, out_dir: str | Path, *, threshold: int = 16, size: int | None = None,
                    workers: int = 1, echo: Callable[[str], None] = print) -> pd.DataFrame:
    """Near-duplicate pairs across train, external and test by perceptual hashes (hpa.data.dedup); writes
    the pair, group, leak and hash tables to `out_dir`."""
    from hpa.data.dedup import find_duplicates as find

    return find(Path(data_dir), Path(out_dir), count("threshold", threshold, 0), size, count("workers", workers),
                echo=echo)


@checked
def make_folds(data_dir: str | Path, n_folds: int = 5, seed: int = 0, duplicates: str | None = None,
               echo: Callable[[str], None] = print) -> Path:
    """folds.csv over train.csv (+ external.csv), with the duplicate groups of dedup/ when they exist."""
    groups = layout.duplicate_groups_csv(Path(data_dir))
    return split_folds(layout.label_tables(Path(data_dir)), layout.folds_csv(Path(data_dir)), n_folds=n_folds,
                       seed=seed, groups=groups if groups.is_file() else None, duplicates=duplicates, echo=echo)


@checked
def split_folds(labels: str | Path | list, out: str | Path, *, n_folds: int = 5, seed: int = 0,
                groups: str | Path | None = None, duplicates: str | None = None, drop_conflicts: bool = False,
                echo: Callable[[str], None] = print) -> Path:
    """An Id,fold table `out` over the union of the `labels` tables (hpa.data.folds.write_folds), with
    its class counts and dropped samples beside it; `groups` (dedup's Id,group) keeps or drops near-duplicates."""
    from hpa.data.folds import DUPLICATES, write_folds

    if duplicates is not None and duplicates not in DUPLICATES:
        raise ConfigError(f"duplicates={duplicates!r}: choose from {', '.join(DUPLICATES)}")
    if drop_conflicts and groups is None:
        raise ConfigError("drop_conflicts (--drop-conflicts) needs groups (--groups)")
    tables = _tables(labels)
    with reading({"labels": tables, "duplicate groups": groups}):
        write_folds(tables, count("n_folds", n_folds, 2), seed, Path(out), Path(groups) if groups else None,
                    duplicates if groups else "ignore", drop_conflicts, echo=echo)
    return Path(out)


@checked
def make_demo(out_dir: str | Path, *, n_train: int = 2000, n_test: int = 500, size: int = 128, seed: int = 0,
              min_per_class: int = 3, partial_cells: float = 0.0) -> Path:
    """The synthetic demo dataset in the Kaggle layout, with the truth of its cells (hpa.data.demo);
    `partial_cells` in [0, 1): each class is drawn in each cell only with probability 1 - it (off:
    every cell of an image shows its classes). Returns its folder."""
    from hpa.data.demo import make_demo as make

    if isinstance(partial_cells, bool) or not isinstance(partial_cells, int | float) or not 0 <= partial_cells < 1:
        raise ConfigError(f"partial_cells={partial_cells!r}: a probability in [0, 1)")
    make(Path(out_dir), count("n_train", n_train), count("n_test", n_test), count("size", size, 32), seed,
         count("min_per_class", min_per_class, 0), partial=float(partial_cells))
    return Path(out_dir)


@checked
def download(data_dir: str | Path, *, kaggle: bool = False, external: str | Path | None = None,
             full_size: str | None = None, base_url: str | None = None, max_side: int | None = None,
             limit: int | None = None, transfer=None) -> int:
    """The Kaggle competition files, the full-size TIFFs from an address template, and the HPAv18
    external samples of a table (hpa.data.download); `transfer`: a Transfer (connections, timeout,
    retries, backoff). Returns the number of files that failed (listed beside the data)."""
    from hpa.data.download import DEFAULT_BASE, Transfer, download_external, download_full_size, download_kaggle

    if not (kaggle or external or full_size):
        raise ConfigError("nothing to do: give --kaggle, --full-size ADDRESS and/or --external [CSV]")
    transfer, data_dir, failed = transfer or Transfer(), Path(data_dir), 0
    with reading({"external table": external}):
        if kaggle:
            download_kaggle(data_dir)
        if full_size:
            failed += download_full_size(data_dir, full_size, transfer=transfer, limit=limit)
        if external:
            failed += download_external(Path(external), data_dir, base_url or DEFAULT_BASE, transfer=transfer,
                                        max_side=max_side, limit=limit)
    return failed


@checked
def train(config, *, runs: str | Path = layout.DEFAULT_RUNS, device: str = "auto", resume: bool = False,
          overwrite: bool = False, echo: Callable[[str], None] = print) -> Path:
    """Train one fold as a TrainConfig says (train_fold.py builds it from its layers); an existing run
    is continued with `resume`, replaced with `overwrite`, else refused. Returns the run directory."""
    from hpa.training.engine import train as train_run

    return train_run(config, runs=Path(runs), device_name=device, resume=resume, overwrite=overwrite, echo=echo)


@checked
def train_fold(arch: str, *, fold: int, size: int, data_dir: str | Path, runs: str | Path = layout.DEFAULT_RUNS,
               overwrite: bool = False, device: str = "auto", echo: Callable[[str], None] = print,
               **settings) -> Path:
    """Train (or resume) one fold; returns its run directory `<runs>/<arch>_<size>/f<fold>/`."""
    from hpa.config import arch_layers, build_config

    cfg = build_config(arch_layers(arch) + [("train_fold()", {**settings, "arch": arch, "fold": fold, "size": size,
                                                              "data_dir": str(data_dir)})])
    return train(cfg, runs=runs, device=device, resume=True, overwrite=overwrite, echo=echo)


@checked
def predict(arch: str, size: int, folds: list[int], *, runs: str | Path = layout.DEFAULT_RUNS,
            out_dir: str | Path = layout.DEFAULT_PREDICTIONS, data_dir: str | Path | None = None,
            **test_time) -> list[Path]:
    """OOF and test predictions of each fold's run; returns the CSVs written. `test_time`: tta, sizes,
    batch_size, amp, workers, device (hpa.prediction.inference.PredictOptions; those left out take its
    defaults: all 8 views, each image at its stored side, batch 32, bf16, in-process loading, a GPU
    when there is one)."""
    from hpa.prediction.inference import predict_folds

    opts = _test_time("predict", test_time)
    return predict_folds(Path(runs), arch, count("size", size, 8), _fold_list(folds), Path(out_dir), opts,
                         data_dir=Path(data_dir) if data_dir else None).write_all()


@dataclass(frozen=True)
class Runs:
    """The runs of one arch and size that predict a folder: `<root>/<arch>_<size>/f<fold>/best.pt` of
    each of `folds`, with per-class `thresholds` (a thresholds JSON) or 0.5."""
    arch: str
    size: int
    folds: tuple[int, ...] = (0,)
    root: Path = layout.DEFAULT_RUNS
    thresholds: Path | None = None


def _user_bundle(bundle: str | Path, device, opts, test_time: dict, thresholds: str | Path | None = None):
    """The bundle with the user's choices over its own: the views if `test_time` names tta, and
    thresholds from a find_thresholds.py JSON."""
    from hpa.data.threshold_files import read_thresholds
    from hpa.prediction.bundle import load_bundle

    return load_bundle(str(bundle), device).with_test_time(
        tta=opts.tta if test_time.get("tta") is not None else None,
        thresholds=read_thresholds(Path(thresholds)) if thresholds else None)


@checked
def predict_images(images: str | Path, out: str | Path, *, bundle: str | Path | None = None,
                   runs: Runs | None = None, ids: str | Path | None = None, strict: bool = False,
                   report: bool | list[int] = True, thresholds: str | Path | None = None, **test_time):
    """Predict every sample of a folder of own images with a `bundle` (a folder, a published model's
    name or a Hub id: its members, TTA, blend and thresholds) or with `runs` (a Runs); writes `out`
    and, with `report`, report.html with class maps of the predicted classes (a list of class numbers
    adds maps of those). `thresholds`: a find_thresholds.py JSON that replaces the bundle's (runs
    carry theirs in the Runs). `test_time`: batch_size, workers, device, tta (with a bundle: replaces
    its members' views), without a bundle sizes and amp, classes, and labels (an Id,Target CSV of
    known classes, shown in the report beside the predicted ones) (PredictOptions)."""
    from hpa.prediction.folder import predict_folder

    if (bundle is None) == (runs is None):
        raise ConfigError("hpa.predict_images(): give a bundle or runs (a Runs of an arch, size and folds)")
    if runs is not None and thresholds is not None:
        raise ConfigError("hpa.predict_images(): thresholds= goes with a bundle; runs carry theirs (Runs.thresholds)")
    held = sorted(set(test_time) & {"sizes", "amp"}) if bundle is not None else []
    if held:
        raise ConfigError(f"{', '.join(held)} with a bundle: the bundle carries its own sizes and precision")
    opts = _test_time("predict_images", test_time)
    device = opts.torch_device()
    if ids is not None:  # a bad Id list is one line before any model is loaded (a bundle's can take minutes)
        from hpa.data.labels import read_ids

        read_ids(Path(ids))
    if opts.labels is not None:  # so is a bad labels table
        from hpa.data.labels import read_labels

        read_labels(opts.labels)
    if bundle is not None:
        b = _user_bundle(bundle, device, opts, test_time, thresholds)
        with reading({"thresholds": thresholds}):
            return b.predict_folder(images, out, ids_csv=ids, strict=strict, report=report, opts=opts)
    from hpa.data.threshold_files import read_thresholds
    from hpa.prediction.ensemble import from_runs

    folds = _fold_list(runs.folds)
    thr = read_thresholds(Path(runs.thresholds)) if runs.thresholds else None
    ens = from_runs(Path(runs.root), runs.arch, count("size", runs.size, 8), folds, device, opts, thr)
    with reading({"thresholds": runs.thresholds}):
        return predict_folder(ens, Path(images), Path(out), ids_csv=Path(ids) if ids else None, strict=strict,
                              report=report, opts=opts)


@checked
def predict_cells(images: str | Path, predictions: str | Path, *, bundle: str | Path | None = None,
                  runs: Runs | None = None, method: str = "maps", segmenter: str = "watershed",
                  masks: str | Path | None = None, **test_time) -> dict:
    """Every cell of a predicted folder: `predictions` is the CSV predict_images wrote for `images`
    with the same `bundle` or `runs`. Each field is segmented by `segmenter`: `watershed` (no
    weights: nuclei, then cells grown over the microtubule and ER stains) or `hpa` (the HPA's
    U-Nets), or its cells are read from `masks` (a folder of `<Id>.png|tif` label masks). Each cell
    is predicted by `method`: `maps` shares the image's probabilities by the class maps, `crops`
    runs the ensemble on each cell's crop, `bestfitting-2021` runs the 2021 winner's cell model
    (hpa.prediction.cells). Writes beside `predictions` the label masks, cells.csv and the 2021
    competition's submission. `test_time`: batch_size, workers, device, tta."""
    from hpa.prediction.cells import predict_cells as run

    if (bundle is None) == (runs is None):
        raise ConfigError("hpa.predict_cells(): give the bundle or runs that predicted the folder")
    opts = _test_time("predict_cells", test_time)
    device = opts.torch_device()
    if bundle is not None:
        b = _user_bundle(bundle, device, opts, test_time)
        with reading({"bundle": b.path}):
            return run(b.ensemble, Path(images), Path(predictions), method=method, segment=segmenter, masks=masks,
                       opts=opts)
    from hpa.prediction.ensemble import from_runs

    ens = from_runs(Path(runs.root), runs.arch, count("size", runs.size, 8), _fold_list(runs.folds), device, opts)
    return run(ens, Path(images), Path(predictions), method=method, segment=segmenter, masks=masks, opts=opts)


@checked
def check_cells(images: str | Path, predictions: str | Path, *, ids: str | Path | None = None, method: str = "maps",
                segmenter: str = "watershed", masks: str | Path | None = None) -> None:
    """What predict_cells will need for the folder `images` (or the samples of `ids`) and the
    predictions file `predictions`, checked before anything is predicted: see
    hpa.prediction.cells.check_cell_inputs (the user's masks, the outputs, the published weights,
    downloaded now). predict_tta.py runs it before the image stage."""
    from hpa.data.labels import read_ids
    from hpa.prediction.cells import check_cell_inputs
    from hpa.prediction.inference import find_image_ids

    listed = read_ids(Path(ids)) if ids else find_image_ids(Path(images))[0]
    check_cell_inputs(Path(images), Path(predictions), listed, method=method, segment=segmenter,
                      masks=Path(masks) if masks is not None else None)


@dataclass
class ThresholdFit:
    thresholds: np.ndarray  # 28 per-class thresholds
    summary: dict  # method, rows, macro F1 at 0.5 and at the thresholds (what thresholds.json holds)
    table: pd.DataFrame  # per class: support, threshold, F1 ...
    notes: list[str]  # what could not be checked
    inputs: dict[str, list[Path]]  # the files it was fitted on, which `write` never replaces

    def write(self, out: str | Path) -> list[Path]:
        """thresholds.json, its per-class CSV and plot beside it, written together (hpa.data.layout)."""
        from hpa.core.atomic import atomic_outputs, check_outputs, csv_text
        from hpa.data.threshold_files import thresholds_text
        from hpa.prediction.report import plot_per_class

        outputs = layout.threshold_outputs(Path(out))
        files = list(outputs.values())
        with reading(self.inputs):
            check_outputs(outputs)
            with atomic_outputs() as tmp:
                tmp(files[0]).write_text(thresholds_text(self.summary))
                tmp(files[1]).write_text(csv_text(self.table))
                plot_per_class(self.table, tmp(files[2]), f"OOF per-class F1, {self.summary['method']} thresholds "
                               f"(macro {self.summary['macro_f1']:.3f})")
        return files


@checked
def fit_thresholds(oof: str | Path | list, labels: str | Path | list[str | Path] | None = None,
                   data_dir: str | Path | None = None, method: str = DEFAULT_METHOD,
                   allow_missing: bool = False) -> ThresholdFit:
    """Per-class thresholds fitted on the OOF files (quoted globs or paths) of one model."""
    from hpa.prediction.blending import check_oof_provenance, concat_oof, labels_for
    from hpa.prediction.metrics import macro_f1
    from hpa.prediction.report import per_class_frame
    from hpa.prediction.thresholds import METHODS, apply_thresholds, per_class_table
    from hpa.prediction.thresholds import fit_thresholds as fit

    if method not in METHODS:
        raise ConfigError(f"method={method!r}: choose from {', '.join(METHODS)}")
    if labels is None and data_dir is None:
        raise ConfigError("hpa.fit_thresholds(): give labels= (a table or a list of tables) or data_dir=")
    files = _paths(oof)
    tables = _tables(labels) if labels is not None else layout.label_tables(Path(data_dir))
    notes = check_oof_provenance(files, tables, allow_missing)
    ids, probs = concat_oof(files)
    y = labels_for(ids, tables)
    thr = fit(probs, y, method)
    summary = {"method": method, "n_samples": len(ids), "thresholds": [float(t) for t in thr],
               "macro_f1_at_0.5": macro_f1(y, probs >= 0.5), "macro_f1": macro_f1(y, probs >= thr),
               "macro_f1_filled": macro_f1(y, apply_thresholds(probs, thr))}
    inputs = {"OOF prediction": files + [layout.sidecar_path(p) for p in files], "labels": tables}
    return ThresholdFit(thr, summary, per_class_frame(per_class_table(probs, y, thr)), notes, inputs)


@checked
def fit_bundle_thresholds(bundle: str | Path, images: str | Path, labels: str | Path | list[str | Path], *,
                          method: str = DEFAULT_METHOD, **test_time) -> ThresholdFit:
    """Thresholds for a bundle (a published model's, or your own) fitted on your own labelled images:
    the samples `labels` lists (Id,Target) are predicted from `images` by the bundle, as
    predict_images would, and per-class thresholds fitted on them (`method` as fit_thresholds).
    `test_time`: tta, batch_size, workers, device. Pass the written JSON to predict_images
    (thresholds=) or predict_tta.py --thresholds."""
    import tempfile

    from hpa.data.predictions import read_predictions
    from hpa.prediction.blending import labels_for
    from hpa.prediction.metrics import macro_f1
    from hpa.prediction.report import per_class_frame
    from hpa.prediction.thresholds import METHODS, apply_thresholds, per_class_table
    from hpa.prediction.thresholds import fit_thresholds as fit

    if method not in METHODS:
        raise ConfigError(f"method={method!r}: choose from {', '.join(METHODS)}")
    tables = _tables(labels)
    if len(tables) != 1:
        raise ConfigError("--labels: one Id,Target table of the labelled images")
    with tempfile.TemporaryDirectory() as tmp:
        r = predict_images(images, Path(tmp) / layout.IMAGE_PREDICTIONS, bundle=bundle, ids=tables[0], strict=True,
                           report=False, **test_time)
        ids, probs = read_predictions(r.predictions)
    y = labels_for(ids, tables)
    thr = fit(probs, y, method)
    summary = {"method": method, "n_samples": len(ids), "thresholds": [float(t) for t in thr],
               "macro_f1_at_0.5": macro_f1(y, probs >= 0.5), "macro_f1": macro_f1(y, probs >= thr),
               "macro_f1_filled": macro_f1(y, apply_thresholds(probs, thr)), "bundle": str(bundle),
               "images": str(Path(images).absolute())}
    notes = [f"fitted on {len(ids)} images: a class with few positives among them keeps a threshold fitted on few "
             "examples"] if len(ids) < 200 else []
    inputs = {"labels": tables, "image": [p for p in Path(images).iterdir() if p.is_file()]}
    return ThresholdFit(thr, summary, per_class_frame(per_class_table(probs, y, thr)), notes, inputs)


@checked
def blend(oof: str | Path | list, test: str | Path | list, data_dir: str | Path | None = None,
          out: str | Path = layout.SUBMISSION, *, labels: str | Path | list | None = None,
          sample_submission: str | Path | None = None, test_labels: str | Path | None = None, **settings) -> dict:
    """Blend every model's OOF and test files into a submission with its report (hpa.prediction.blending.run_blend).
    The labels and test Ids are `data_dir`'s (train.csv and external.csv, sample_submission.csv) unless
    `labels` / `sample_submission` name them. `settings`: method, weights, rounds, cv_folds, seed,
    allow_missing (hpa.prediction.blending.BlendSettings; `auto` chooses by cross-validation)."""
    from hpa.prediction.blending import BlendSettings, run_blend

    try:
        chosen = BlendSettings(**settings).checked()
    except TypeError:
        raise ConfigError(f"hpa.blend(): unknown argument(s) {', '.join(sorted(settings))} (settings: method, "
                          "weights, rounds, cv_folds, seed, allow_missing)") from None
    if not (labels and sample_submission) and data_dir is None:
        raise ConfigError("--data-dir (or both --labels and --sample-submission) is needed: where are the labels "
                          "and the test Ids?")
    data = Path(data_dir) if data_dir is not None else None
    return run_blend(_paths(oof), _paths(test), _tables(labels) if labels else layout.label_tables(data),
                     Path(sample_submission) if sample_submission else layout.split_table(data, "test"), Path(out),
                     settings=chosen, test_labels=Path(test_labels) if test_labels else None,
                     folds_csv=layout.folds_csv(data) if data else None)


@dataclass
class Exported:
    bundle: Path | None = None
    bioimageio: Path | None = None
    hub_url: str | None = None


@checked
def export_bundle(source: str | Path | None, out_dir: str | Path, *, members: list[str] | None = None,
                  folds: list[int] | None = None, licence: str = "cc-by-sa-3.0", datasets: list[str] = (),
                  bioimageio: str | Path | None = None, push: str | None = None) -> Exported:
    """A recipe output (`source`: its blend.json, runs and predictions) as a bundle folder `out_dir`
    (hpa.prediction.bundle); with `bioimageio` also a BioImage Model Zoo package (.zip), with `push`
    the bundle uploaded to that Hugging Face repository. `source` None: an existing bundle, exported or pushed."""
    from hpa.prediction import bundle as b

    if source is None and not (push or bioimageio):
        raise ConfigError("--from is required (or --push / --bioimageio with an existing bundle)")
    if Path(out_dir).is_file():  # before a model is loaded: a file is never replaced by a bundle
        raise ConfigError(f"--out-dir {out_dir}: a file, not a folder; give the bundle's folder")
    done = Exported()
    if source is not None:
        from hpa.prediction.blending import read_blend_summary

        if not Path(source).is_dir():
            raise ConfigError(f"--from {source}: {'a file' if Path(source).exists() else 'no such folder'}, not a "
                              "recipe output folder (the --out-dir of run_all.sh, holding blend.json)")
        read_blend_summary(layout.blend_summary(Path(source)))  # a missing or broken one: one line, before any model
        with reading({"recipe output": [layout.blend_summary(Path(source))]}):
            done.bundle = b.export_bundle(source, out_dir, members=members, folds=folds, licence=licence,
                                          datasets=datasets)
    with reading({"bundle": Path(out_dir)}):
        if bioimageio:
            from hpa.prediction.bioimageio import export_bioimageio

            done.bioimageio = export_bioimageio(out_dir, bioimageio)
        if push:
            done.hub_url = b.push_bundle(out_dir, push)
    return done


@checked
def embed(encoder, *, data_dir: str | Path | None = None, images: str | Path | None = None,
          out_dir: str | Path | None = None, splits: list[str] | None = None, batch_size: int = 32, workers: int = 0,
          device: str = "auto") -> Path:
    """Embed a prepared dataset (`data_dir`, its `splits`) or a folder of own `images` (into `out_dir`)
    with a frozen `encoder` (hpa.prediction.embeddings.Encoder.named); returns the store."""
    from hpa.core.runtime import pick_device
    from hpa.prediction.embeddings import embed_dataset, embed_folder

    if (images is None) == (data_dir is None):
        raise ConfigError("give either --data-dir (a dataset) or --images with --out-dir (a folder)")
    if images is not None and out_dir is None:
        raise ConfigError("--images: needs --out-dir (the folder the embeddings go to)")
    loader = dict(batch_size=count("batch_size", batch_size), device=pick_device(device),
                  workers=count("workers", workers, 0))
    if images is not None:
        return embed_folder(Path(images), Path(out_dir), encoder, **loader)
    return embed_dataset(Path(data_dir), encoder, splits=splits, **loader)


@checked
def ablate(base, factors: list[str], *, seeds: int = 3, folds: list[int] = (0, 1),
           out_dir: str | Path = layout.DEFAULT_ABLATIONS, device: str = "auto", jobs: int = 1,
           echo: Callable[[str], None] = print) -> pd.DataFrame:
    """Each factor of the paper's recipe against `base` (a TrainConfig), `seeds` seeds x `folds`
    (hpa.pipeline.ablation); writes results, summary, table and plot into `out_dir`."""
    from hpa.pipeline.ablation import run_ablation

    return run_ablation(base, factors, count("seeds", seeds), _fold_list(folds), Path(out_dir), device=device,
                        jobs=count("jobs", jobs), echo=echo)


@checked
def run_recipe(request, echo: Callable[[str], None] = print):
    """A whole recipe as `bash run_all.sh` runs it (a hpa.pipeline.recipe.RecipeRequest: the demo or
    real data, here or on SLURM, or its plan); returns a RecipeOutcome."""
    from hpa.pipeline.recipe import run_request

    return run_request(request, echo)
