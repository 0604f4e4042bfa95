"""HPA protein-localisation toolkit (Zhang et al. 2021 as software). The Python entry points are
importable from here (hpa.api; load_bundle from hpa.prediction.bundle): prepare, find_duplicates,
make_folds, split_folds, make_demo, download, train, train_fold, predict, predict_images, Runs,
fit_thresholds, blend, export_bundle, load_bundle, embed, ablate and run_recipe."""

import os

# albumentations asks the package index for its newest release at every import unless this is set:
# a toolkit that never phones home (cluster nodes are often offline, and each process would pay the
# request's timeout). Set before any hpa module can import it.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.3.0"

API = {**{name: "api" for name in (
    "prepare", "find_duplicates", "make_folds", "split_folds", "make_demo", "download", "train", "train_fold",
    "predict", "predict_images", "predict_cells", "check_cells", "Runs", "fit_thresholds", "fit_bundle_thresholds",
    "blend",
    "export_bundle", "embed", "ablate", "run_recipe")}, "load_bundle": "prediction.bundle"}


def __getattr__(name: str):
    # imported on first use, so `import hpa.data.labels` stays light (no torch)
    if name in API:
        import importlib

        return getattr(importlib.import_module(f"hpa.{API[name]}"), name)
    raise AttributeError(f"module 'hpa' has no attribute {name!r}")
