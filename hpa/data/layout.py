"""Where everything lives on disk: the one module that names the files and folders of a dataset, of
runs, of prediction files and of every other output of the toolkit. It names paths and nothing else:
what is in the files is read and written elsewhere (prepared arrays: hpa.data.arrays, thresholds:
hpa.data.threshold_files, provenance: hpa.data.provenance).

A dataset directory (Kaggle layout, data/README.md):
    train.csv, sample_submission.csv, external.csv (HPAv18, optional)   the split tables
    train/, test/, external/                                             the raw images
    prepared/<size>/<split>/<Id>.npy                                      H x W x 4 uint8, one per sample
    dedup/duplicate_groups.csv (and pairs, leaks, hashes)                 input_prep/dedup.py
    folds.csv (+ folds_class_counts.csv, folds_dropped.csv)              input_prep/make_folds.py
    embeddings/<encoder>_<size>/                                          embed.py
    download_failures*.csv, test_labels.csv, demo_duplicates.csv, preview.png   download, the demo
Outputs:
    <runs>/<arch>_<size>/f<fold>/      one training run (RUN_FILES), runs/ by default
    <dir>/<arch>_<size>_f<fold>_{oof,test}.csv (+ .json sidecar)         prediction files, predictions/
    thresholds.json (+ .csv, .png)                                        find_thresholds.py
    <out-dir>/: runs/, predictions/, submission.csv, report.md, blend.json, plan.md, slurm/   a recipe
    ablations/<arch>_<size>/: results, summary, table, folds/, runs/     ablate.py
    weights/<member>/f<fold>.safetensors, config.json, README.md          a bundle
    report.html, report_files/<Id>.jpg beside a folder's predictions    predict_tta.py --images
    .lock in every directory a run, recipe or ablation writes
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

# split -> its table; the labelled splits train in this order (read_label_tables' `table` index)
SPLIT_TABLES = {"train": "train.csv", "external": "external.csv", "test": "sample_submission.csv"}
LABELLED_SPLITS = ("train", "external")
# the files of one run directory, by role (run_file)
RUN_FILES = {"last": "last.pt", "best": "best.pt", "log": "log.csv", "lr_steps": "lr_steps.csv",
             "config": "config.yaml", "provenance": "provenance.json", "class_counts": "class_counts.csv",
             "curves": "curves.png", "lr_schedule": "lr_schedule.png", "lr_find": "lr_find.json",
             "lr_find_plot": "lr_find.png"}
DEDUP_FILES = {"hashes": "hashes.csv", "pairs": "duplicate_pairs.csv", "groups": "duplicate_groups.csv",
               "leaks": "leaks.csv"}
ABLATION_FILES = {"results": "results.csv", "summary": "summary.csv", "table": "table.md", "config": "config.json",
                  "plot": "plot.png"}
BUNDLE_FILES = {"config": "config.json", "card": "README.md"}  # + bundle_weights(member, fold)
# inside a BioImage Model Zoo package (hpa.prediction.bioimageio)
BIOIMAGEIO_FILES = {"weights": "ensemble.pt", "test_input": "test_input.npy", "test_output": "test_output.npy",
                    "cover": "cover.png", "documentation": "README.md", "thresholds": "thresholds.json"}
PREDICTION_RE = re.compile(r"^(?P<arch>.+)_(?P<size>\d+)_f(?P<fold>\d+)_(?P<kind>oof|test)\.csv$")


# ---- the dataset -------------------------------------------------------------------------------

def split_table(data_dir: Path, split: str) -> Path:
    return Path(data_dir) / SPLIT_TABLES[split]


def raw_dir(data_dir: Path, split: str) -> Path:
    """The folder of a split's raw images: train/, external/ or test/."""
    return Path(data_dir) / split


def present_splits(data_dir: Path, splits=tuple(SPLIT_TABLES)) -> list[str]:
    """The splits that have both their table and their image folder."""
    return [s for s in splits if split_table(data_dir, s).is_file() and raw_dir(data_dir, s).is_dir()]


def label_tables(data_dir: Path, external: str = "auto") -> list[Path]:
    """train.csv, and external.csv (HPAv18) when it exists and `external` is not off: the tables
    a run trains on, in the order of read_label_tables' `table` index."""
    ext = split_table(data_dir, "external")
    return [split_table(data_dir, "train")] + ([ext] if external == "auto" and ext.is_file() else [])


def folds_csv(data_dir: Path, override: str | Path | None = None) -> Path:
    return Path(override) if override else Path(data_dir) / "folds.csv"


def folds_companion(folds: Path, what: str) -> Path:
    """`<folds stem>_<what>.csv` beside the folds table: `class_counts` or `dropped`."""
    return Path(folds).with_name(f"{Path(folds).stem}_{what}.csv")


def dedup_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "dedup"


def dedup_file(out_dir: Path, what: str) -> Path:
    """One of the duplicate search's outputs (DEDUP_FILES) in its output directory."""
    return Path(out_dir) / DEDUP_FILES[what]


def duplicate_groups_csv(data_dir: Path) -> Path:
    return dedup_file(dedup_dir(data_dir), "groups")


def failure_list(prepared_split: Path, split: str) -> Path:
    """`prepared/<size>/failures_<split>.csv`: the samples prepare could not read, with the reason."""
    return Path(prepared_split).parent / f"failures_{split}.csv"


def test_labels_csv(data_dir: Path) -> Path:
    """The demo's labels of its test split (a real dataset has none): the blend scores the test with it."""
    return Path(data_dir) / "test_labels.csv"


# the synthetic demo's extras (hpa.data.demo): the injected near-duplicate pairs and one image per class
DEMO_FILES = {"duplicates": "demo_duplicates.csv", "preview": "preview.png"}


def demo_file(data_dir: Path, what: str) -> Path:
    return Path(data_dir) / DEMO_FILES[what]


def demo_cells(data_dir: Path, split: str) -> dict[str, Path]:
    """The demo's cell truth of a split: `cells/<split>/<Id>.png` (16-bit label masks of the drawn
    cells) and `cells/<split>.csv` (Id, cell, Target: the classes drawn in that cell)."""
    d = Path(data_dir) / "cells"
    return {"masks": d / split, "table": d / f"{split}.csv"}


# what a download could not fetch (hpa.data.download), listed for the re-run that retries it
DOWNLOAD_FAILURES = {"external": "download_failures.csv", "full_size": "download_failures_full_size.csv"}


def download_failures(data_dir: Path, what: str) -> Path:
    return Path(data_dir) / DOWNLOAD_FAILURES[what]


# package data that travels with the library
PACKAGE_DATA = Path(__file__).parent
HPAV18_TABLE = PACKAGE_DATA / "HPAv18RBGY_wodpl.csv.gz"  # source and licence: HPAv18_SOURCE.md beside it
DEMO_LABEL_SETS = PACKAGE_DATA / "kaggle2018_label_sets.json"  # label-set frequencies of Kaggle 2018's train.csv


def prepared_dir(data_dir: Path, size: int, split: str) -> Path:
    return Path(data_dir) / "prepared" / str(size) / split


def prepared_path(store: Path, sample_id: str) -> Path:
    return Path(store) / f"{sample_id}.npy"


def stores_of(data_dir: Path, size: int, table_index) -> list[Path]:
    """The prepared store of each labelled sample, from read_label_tables' `table` column."""
    dirs = [prepared_dir(data_dir, size, s) for s in LABELLED_SPLITS]
    return [dirs[int(t)] for t in table_index]


# ---- frozen-encoder embeddings ----------------------------------------------------------------

def embeddings_dir(data_dir: Path, encoder: str, size: int) -> Path:
    """`embeddings/<encoder>_<size>/` of a dataset: `<split>.npy` (N x views x D, float16),
    `<split>_ids.csv`, `provenance.json`, and `<split>.parts/` while a split is being embedded."""
    return embedding_store(Path(data_dir) / "embeddings", encoder, size)


def embedding_store(root: Path, encoder: str, size: int) -> Path:
    """`<root>/<encoder>_<size>/`: the store of one encoder at one side (embed.py --images: under --out-dir)."""
    return Path(root) / f"{encoder}_{size}"


def embedding_files(store: Path, split: str) -> dict[str, Path]:
    return {"array": Path(store) / f"{split}.npy", "ids": Path(store) / f"{split}_ids.csv",
            "parts": Path(store) / f"{split}.parts"}


def embedding_parts_owner(parts: Path) -> Path:
    """The list of images (Ids and sources) a split's part files were made from."""
    return Path(parts) / "images.json"


def embedding_part(parts: Path, start: int) -> Path:
    """The part file of the chunk that begins at sample `start`, in a split's `<split>.parts/`."""
    return Path(parts) / f"{start:05d}.npy"


def embedding_provenance(store: Path) -> Path:
    return Path(store) / "provenance.json"


# ---- the cache of named pretrained weights (hpa.models.hpa_weights) -----------------------------

def weights_cache() -> Path:
    """$HPA_WEIGHTS_CACHE, else $XDG_CACHE_HOME/hpa-toolkit/weights (~/.cache/hpa-toolkit/weights)."""
    import os

    if os.environ.get("HPA_WEIGHTS_CACHE"):
        return Path(os.environ["HPA_WEIGHTS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hpa-toolkit" / "weights"


def published_bundle(name: str) -> Path:
    """The bundle a published model is converted into, beside its weights file in the cache."""
    return weights_cache() / name / "bundle"


def weights_sidecar(weights: Path) -> Path:
    """`<file>.json` beside a downloaded weights file: its address, size, checksum and licence."""
    return Path(weights).with_name(Path(weights).name + ".json")


# ---- runs and prediction files ---------------------------------------------------------------

DEFAULT_RUNS = Path("runs")  # the runs root of train_fold.py, predict_tta.py, hpa.train_fold, ... (--runs)
DEFAULT_PREDICTIONS = Path("predictions")  # where predict_tta.py and hpa.predict write (--out-dir)


def run_dir(runs: Path, arch: str, size: int, fold: int) -> Path:
    return Path(runs) / f"{arch}_{size}" / f"f{fold}"


def run_file(run: Path, what: str) -> Path:
    """A file of a run directory by its role: last, best, log, config, provenance, ... (RUN_FILES)."""
    return Path(run) / RUN_FILES[what]


def lock_file(directory: Path) -> Path:
    """`<directory>/.lock`: the lock (hpa.core.locks.dir_lock) of a run, recipe or ablation directory."""
    return Path(directory) / ".lock"


def finished_run(run: Path, epochs: int) -> bool:
    """The one definition of a finished run, for training and for SLURM: last.pt exists and the log
    (written after it, each epoch) records `epochs` epochs. Cheap: no checkpoint is read."""
    log = run_file(run, "log")
    return run_file(run, "last").is_file() and log.is_file() and len(pd.read_csv(log)) >= epochs


def prediction_path(out_dir: Path, arch: str, size: int, fold: int, kind: str) -> Path:
    return Path(out_dir) / f"{arch}_{size}_f{fold}_{kind}.csv"


def prediction_glob(out_dir: Path, kind: str) -> str:
    """The quoted glob of every `oof` or `test` prediction file in a directory (blend.py's defaults)."""
    return str(Path(out_dir) / f"*_{kind}.csv")


def is_prediction(path: Path) -> bool:
    """A prediction file's name (prediction_path), not its sidecar's."""
    return PREDICTION_RE.match(Path(path).name) is not None


def sidecar_path(prediction: Path) -> Path:
    return Path(prediction).with_suffix(".json")


def parse_prediction_name(path: Path) -> dict:
    from hpa.errors import PredictionError

    m = PREDICTION_RE.match(Path(path).name)
    if not m:
        raise PredictionError(f"{path}: name does not follow <arch>_<size>_f<fold>_{{oof,test}}.csv")
    d = m.groupdict()
    return {"arch": d["arch"], "size": int(d["size"]), "fold": int(d["fold"]), "kind": d["kind"],
            "model": f"{d['arch']}_{d['size']}"}


# ---- a recipe's output directory and a folder's report -----------------------------------------

DEMO_DATA = Path("data") / "demo"  # where run_all.sh generates the demo dataset when no data directory is given


def recipe_work_dir(data_dir: Path) -> Path:
    """A recipe's default output folder: work/<data directory's name>."""
    return Path("work") / Path(data_dir).absolute().name


def recipe_runs(out_dir: Path) -> Path:
    return Path(out_dir) / "runs"


def recipe_predictions(out_dir: Path) -> Path:
    return Path(out_dir) / "predictions"


def blend_outputs(out: Path) -> dict[str, Path]:
    """The files one blend writes together: the submission, and its report, plot and summary beside it."""
    return {"submission (--out)": Path(out), "report": Path(out).with_name("report.md"),
            "report plot": Path(out).with_name("report.png"), "blend summary": Path(out).with_name("blend.json")}


SUBMISSION = "submission.csv"  # a blend's default output name (blend.py --out, hpa.blend)
IMAGE_PREDICTIONS = "image_predictions.csv"  # predict_tta.py --images without --out


def recipe_submission(out_dir: Path) -> Path:
    return Path(out_dir) / SUBMISSION


def blend_summary(out_dir: Path) -> Path:
    """blend.json, written by the blend beside the submission."""
    return blend_outputs(recipe_submission(out_dir))["blend summary"]


def recipe_report(out_dir: Path) -> Path:
    return blend_outputs(recipe_submission(out_dir))["report"]


def recipe_plan(out_dir: Path) -> Path:
    return Path(out_dir) / "plan.md"


def recipe_copy(out_dir: Path) -> Path:
    """recipe.yaml: the recipe as SLURM jobs read it, when the command line changed it (--n-folds)."""
    return Path(out_dir) / "recipe.yaml"


DEFAULT_ABLATIONS = Path("ablations")  # ablate.py --out-dir's default


def ablation_dir(root: Path, arch: str, size: int, name: str | None = None) -> Path:
    """One ablation's output directory: `<root>/<name>/`, by default `<root>/<arch>_<size>/`."""
    return Path(root) / (name or f"{arch}_{size}")


def ablation_file(out_dir: Path, what: str) -> Path:
    return Path(out_dir) / ABLATION_FILES[what]


def ablation_folds(out_dir: Path, mode: str) -> Path:
    """The folds table an ablation makes for one way of handling duplicates: `folds/<mode>.csv`."""
    return Path(out_dir) / "folds" / f"{mode}.csv"


def ablation_runs(out_dir: Path, factor: str, variant: str, seed: int) -> Path:
    """The runs root of one ablation cell: `runs/<factor>=<variant>/s<seed>/`."""
    return Path(out_dir) / "runs" / f"{factor}={variant}" / f"s{seed}"


def ablation_oof(run: Path, tta: int) -> Path:
    """A scored cell's OOF probabilities at `tta` views, kept in its run directory."""
    return Path(run) / f"oof_tta{tta}.csv"


def slurm_dir(out_dir: Path) -> Path:
    """`<out-dir>/slurm/`: the batch scripts and logs of a recipe's SLURM jobs."""
    return Path(out_dir) / "slurm"


def slurm_script(jobs: Path, name: str) -> Path:
    return Path(jobs) / f"{name}.sbatch"


def slurm_log(jobs: Path, name: str, task: str | None = None) -> Path:
    """A job's log, or with `task` an array task's (`%a` for sbatch, `<fold>` for the user)."""
    return Path(jobs) / (f"{name}_{task}.log" if task else f"{name}.log")


def bundle_weights(member: str, fold: int) -> str:
    """A fold's weights in a bundle, relative to its root (as its config.json records them)."""
    return f"weights/{member}/f{fold}.safetensors"


def recipe_cells_by(out_dir: Path, method: str) -> Path:
    """The demo's test images' predictions copied where another per-cell method writes its cells."""
    return Path(out_dir) / "test_images" / f"cells_{method}" / "predictions.csv"


def recipe_test_images(out_dir: Path) -> Path:
    """The recipe's own-image prediction of the test folder (probabilities, names, report.html beside)."""
    return Path(out_dir) / "test_images" / "predictions.csv"


def folder_report(predictions: Path) -> Path:
    """report.html beside a folder's predictions file."""
    return Path(predictions).with_name("report.html")


def report_assets(predictions: Path) -> Path:
    """The report's images: one picture per field, `report_files/<Id>.jpg` (report_sprite)."""
    return Path(predictions).with_name("report_files")


def cell_outputs(predictions: Path) -> dict[str, Path]:
    """The per-cell outputs beside a folder's predictions file: `cells.csv` (a row per cell),
    `cell_submission.csv` (the 2021 competition's format) and `cell_masks/<Id>.png` (16-bit labels)."""
    p = Path(predictions)
    return {"table": p.with_name("cells.csv"), "submission": p.with_name("cell_submission.csv"),
            "masks": p.with_name("cell_masks")}


def cell_mask(masks: Path, sample_id: str) -> Path:
    return Path(masks) / f"{sample_id}.png"


MASK_EXTENSIONS = ("png", "tif", "tiff")


def user_masks(masks: Path, sample_id: str) -> list[Path]:
    """A user's label masks of a sample in a `--masks DIR`: `<Id>.png`, `.tif` or `.tiff`, the
    extension in any case (one is expected)."""
    import os

    found: list[Path] = []
    for ext in MASK_EXTENSIONS:
        for e in dict.fromkeys((ext, ext.upper())):
            p = Path(masks) / f"{sample_id}.{e}"
            if p.is_file() and not any(os.path.samefile(p, q) for q in found):  # one file on a case-folding disk
                found.append(p)
    return found



def report_sprite(assets: Path, sample_id: str) -> Path:
    """One field's picture in the report's folder: the composite and the four stains side by side."""
    return Path(assets) / f"{sample_id}.jpg"


# what earlier versions wrote there (`<Id>/composite.png`, ..., `<Id>/cam_<k>.png`): replaced like the pictures
OLD_REPORT_IMAGE = re.compile(r"(composite|thumb|red|green|blue|yellow|cam_\d+)\.png")


def is_report_image(path: Path) -> bool:
    """A file the report's image folder may hold, so replacing the folder loses nothing of the user's:
    a field's picture (report_sprite), or one of the PNGs of an earlier version's `<Id>/` folders."""
    path = Path(path)
    return path.suffix == ".jpg" or OLD_REPORT_IMAGE.fullmatch(path.name) is not None


# ---- the thresholds file ---------------------------------------------------------------------

THRESHOLDS = "thresholds.json"  # find_thresholds.py --out's default


def threshold_outputs(out: Path) -> dict[str, Path]:
    """The files a threshold fit writes together: the JSON (`--out`), its per-class table and plot."""
    return {"thresholds JSON (--out)": Path(out), "per-class table": Path(out).with_suffix(".csv"),
            "per-class plot": Path(out).with_suffix(".png")}
