"""The toolkit from Python (a notebook, a script of your own), from any directory once the project
is installed (`pip install .`): the same steps as the command-line scripts, as functions.

    import hpa
    hpa.prepare("data/demo", size=128)
    hpa.make_folds("data/demo", n_folds=2)
    run = hpa.train_fold("tiny_cnn", fold=0, size=128, data_dir="data/demo", runs="runs", epochs=2)
    files = hpa.predict("tiny_cnn", size=128, folds=[0, 1], runs="runs", out_dir="predictions", tta=2)
    fit = hpa.fit_thresholds("predictions/tiny_cnn_128_f*_oof.csv", data_dir="data/demo")  # .thresholds
    summary = hpa.blend("predictions/*_oof.csv", "predictions/*_test.csv", data_dir="data/demo",
                        out="submission.csv")

Settings of `train_fold` are TrainConfig keys (`epochs=2`, `model={"head_hidden": []}`) over the
arch's shipped config, as `--set` on the command line. Errors are `hpa.errors.HPAError`s with a
one-line message.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpa.data import layout
from hpa.errors import ConfigError
from hpa.prediction.thresholds import DEFAULT_METHOD


def checked(fn: Callable) -> Callable:
    """A misspelt or missing argument is an HPAError naming the function, as a bad value is."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            sig.bind(*args, **kwargs)
        except TypeError as e:
            params = ", ".join(p for p in sig.parameters if p not in ("settings", "options"))
            raise ConfigError(f"hpa.{fn.__name__}(): {e} (its arguments: {params})") from None
        return fn(*args, **kwargs)
    return call


def _positive(name: str, v, low: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < low:
        raise ConfigError(f"{name}={v!r}: expected an integer >= {low}")
    return int(v)


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


@checked
def prepare(data_dir: str | Path, size: int, workers: int = 1, echo: Callable[[str], None] = print) -> dict:
    """Resize every sample of the dataset once to `size` (hpa.data.preparation); returns the failures per split."""
    from hpa.data.preparation import prepare_dataset

    return prepare_dataset(layout.require_dir(Path(data_dir), "data_dir"), _positive("size", size, 8),
                           workers=_positive("workers", workers), echo=echo)


@checked
def make_folds(data_dir: str | Path, n_folds: int = 5, seed: int = 0, duplicates: str | None = None,
               echo: Callable[[str], None] = print) -> Path:
    """folds.csv over train.csv (+ external.csv), with the duplicate groups of dedup/ when they exist."""
    from hpa.data.folds import DUPLICATES, write_folds

    if duplicates is not None and duplicates not in DUPLICATES:
        raise ConfigError(f"duplicates={duplicates!r}: choose from {', '.join(DUPLICATES)}")
    _positive("n_folds", n_folds, 2)

    data_dir = Path(data_dir)
    groups = layout.duplicate_groups_csv(data_dir)
    out = layout.folds_csv(data_dir)
    write_folds(layout.label_tables(data_dir), n_folds, seed, out, groups if groups.is_file() else None,
                duplicates if groups.is_file() else "ignore", echo=echo)  # None: the default (drop)
    return out


@checked
def train_fold(arch: str, fold: int, size: int, data_dir: str | Path, runs: str | Path = "runs", resume: bool = True,
               overwrite: bool = False, device: str = "auto", echo: Callable[[str], None] = print,
               **settings) -> Path:
    """Train (or resume) one fold; returns its run directory `<runs>/<arch>_<size>/f<fold>/`."""
    from hpa.config import arch_layers, build_config
    from hpa.training.engine import train

    cfg = build_config(arch_layers(arch) + [("train_fold()", {**settings, "arch": arch, "fold": fold, "size": size,
                                                              "data_dir": str(data_dir)})])
    return train(cfg, runs=Path(runs), device_name=device, resume=resume, overwrite=overwrite, echo=echo)


@checked
def predict(arch: str, size: int, folds: list[int], runs: str | Path = "runs", out_dir: str | Path = "predictions",
            tta: int | str | None = None, data_dir: str | Path | None = None, sizes: list[int] | None = None,
            batch_size: int | None = None, amp: str | None = None, workers: int | None = None,
            device: str | None = None) -> list[Path]:
    """OOF and test predictions of each fold's run with `tta` dihedral transforms; returns the CSVs
    written. The test-time settings left None take PredictOptions' defaults (all 8 views, each
    image at its stored side, batch 32, bf16, in-process loading, a GPU when there is one)."""
    from hpa.prediction.inference import PredictOptions, predict_folds

    opts = PredictOptions.make(tta=tta, sizes=sizes, batch_size=batch_size, amp=amp, workers=workers, device=device)
    return predict_folds(Path(runs), arch, _positive("size", size, 8), _fold_list(folds), Path(out_dir), opts,
                         data_dir=Path(data_dir) if data_dir else None).write_all()


@checked
def predict_images(images: str | Path, out: str | Path, *, bundle: str | Path | None = None,
                   runs: str | Path = "runs", arch: str | None = None, size: int | None = None,
                   folds: list[int] | None = None, thresholds: str | Path | None = None, ids: str | Path | None = None,
                   strict: bool = False, report: bool = True, explain: list[int] = (), opts=None,
                   echo: Callable[[str], None] = print):
    """Predict every sample of a folder of own images with a bundle (a folder or a Hub id: its members,
    TTA, blend and thresholds) or with the runs of one arch and size (`folds`, optional
    `thresholds` JSON); writes `out` and, with `report`, report.html with class maps. `opts`: a
    PredictOptions (its TTA and sizes are the bundle's own when a bundle is given)."""
    from hpa.prediction.folder import predict_folder
    from hpa.prediction.inference import PredictOptions

    opts = opts or PredictOptions.make()
    device = opts.torch_device()
    if bundle:
        from hpa.prediction.bundle import load_bundle

        loaded = load_bundle(str(bundle), device)
        ens, source = loaded.ensemble, f"bundle {loaded.path}"
    else:
        from hpa.prediction.ensemble import from_runs

        if arch is None or size is None:
            raise ConfigError("arch and size are required without a bundle")
        folds = _fold_list(folds if folds is not None else [0])
        thr = layout.read_thresholds(Path(thresholds)) if thresholds else None
        ens = from_runs(Path(runs), arch, _positive("size", size, 8), folds, device, opts.tta, opts.sizes, opts.amp,
                        thr)
        source = f"runs: {Path(runs).absolute()} ({arch}_{size}, folds {' '.join(map(str, folds))})"
    return predict_folder(ens, Path(images), Path(out), ids_csv=Path(ids) if ids else None, strict=strict,
                          report=report, explain=list(explain), batch_size=opts.batch_size, device=device,
                          workers=opts.workers, source=source, echo=echo,
                          inputs={"thresholds": [Path(thresholds)] if thresholds else []})


@dataclass
class ThresholdFit:
    thresholds: np.ndarray  # 28 per-class thresholds
    summary: dict  # method, rows, macro F1 at 0.5 and at the thresholds (what thresholds.json holds)
    table: pd.DataFrame  # per class: support, threshold, F1 ...
    notes: list[str]  # what could not be checked

    def write(self, out: str | Path) -> list[Path]:
        """thresholds.json, its per-class CSV and plot beside it, written together (hpa.data.layout)."""
        from hpa.core.atomic import atomic_outputs, csv_text
        from hpa.prediction.report import plot_per_class

        files = list(layout.threshold_outputs(Path(out)).values())
        with atomic_outputs() as tmp:
            tmp(files[0]).write_text(layout.thresholds_text(self.summary))
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
    return ThresholdFit(thr, summary, per_class_frame(per_class_table(probs, y, thr)), notes)


@checked
def blend(oof: str | Path | list, test: str | Path | list, data_dir: str | Path, out: str | Path = layout.SUBMISSION,
          *, method: str = "auto", weights: str = "auto", rounds: int = 20, cv_folds: int | None = None, seed: int = 0,
          allow_missing: bool = False, test_labels: str | Path | None = None) -> dict:
    """Blend every model's OOF and test files into a submission with its report (hpa.prediction.blending.run_blend):
    weights and threshold method fitted, or chosen by cross-validation with `auto`."""
    from hpa.prediction.blending import WEIGHTINGS, run_blend
    from hpa.prediction.thresholds import METHODS

    if weights not in (*WEIGHTINGS, "auto"):
        raise ConfigError(f"weights={weights!r}: choose from {', '.join(WEIGHTINGS)} or auto")
    if method not in (*METHODS, "auto"):
        raise ConfigError(f"method={method!r}: choose from {', '.join(METHODS)} or auto")
    data_dir = Path(data_dir)
    return run_blend(_paths(oof), _paths(test), layout.label_tables(data_dir), layout.split_table(data_dir, "test"),
                     Path(out), test_labels=Path(test_labels) if test_labels else None, method=method, weights=weights,
                     rounds=_positive("rounds", rounds), cv_folds=None if cv_folds is None else _positive(
                         "cv_folds", cv_folds, 2), seed=seed, allow_missing=allow_missing,
                     folds_csv=layout.folds_csv(data_dir))
