"""HPA protein-localisation toolkit (Zhang et al. 2021 as software). The Python entry points are
importable from here: prepare, make_folds, train_fold, predict, fit_thresholds, blend (hpa.api),
export_bundle and load_bundle (hpa.bundle)."""

import os

# albumentations asks the package index for its newest release at every import unless this is set:
# a toolkit that never phones home (cluster nodes are often offline, and each process would pay the
# request's timeout). Set before any hpa module can import it.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

API = {"prepare": "api", "make_folds": "api", "train_fold": "api", "predict": "api", "fit_thresholds": "api",
       "blend": "api", "export_bundle": "bundle", "load_bundle": "bundle"}


def __getattr__(name: str):
    # imported on first use, so `import hpa.labels` stays light (no torch)
    if name in API:
        import importlib

        return getattr(importlib.import_module(f"hpa.{API[name]}"), name)
    raise AttributeError(f"module 'hpa' has no attribute {name!r}")
