"""HPA protein-localisation toolkit (Zhang et al. 2021 as software). The Python entry points are
importable from here: prepare, make_folds, train_fold, predict, predict_images, fit_thresholds and
blend (hpa.api), export_bundle and load_bundle (hpa.prediction.bundle)."""

import importlib
import importlib.abc
import importlib.util
import os
import sys

# albumentations asks the package index for its newest release at every import unless this is set:
# a toolkit that never phones home (cluster nodes are often offline, and each process would pay the
# request's timeout). Set before any hpa module can import it.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

API = {"prepare": "api", "make_folds": "api", "train_fold": "api", "predict": "api", "predict_images": "api",
       "fit_thresholds": "api", "blend": "api", "export_bundle": "prediction.bundle",
       "load_bundle": "prediction.bundle"}


def __getattr__(name: str):
    # imported on first use, so `import hpa.data.labels` stays light (no torch)
    if name in API:
        import importlib

        return getattr(importlib.import_module(f"hpa.{API[name]}"), name)
    raise AttributeError(f"module 'hpa' has no attribute {name!r}")


# Module paths of 0.2, before the library was grouped into layers: `import hpa.inference` and
# `from hpa.labels import NUM_CLASSES` keep working, and give the very module of its new home.
MOVED = {old: f"hpa.{layer}.{old}" for layer, olds in {
    "core": ["runtime", "checkpoint"],
    "data": ["labels", "layout", "resolution", "preparation", "dedup", "hashing", "folds", "dataset", "sampling",
             "predictions"],
    "training": ["memory", "losses", "schedules", "distributed", "board", "frozen"],
    "prediction": ["inference", "thresholds", "blending", "ensemble", "metrics", "report", "explain", "folder",
                   "html_report", "embeddings", "bundle", "bioimageio"],
    "pipeline": ["recipe", "slurm", "plan", "ablation"]}.items() for old in olds}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        old = fullname.removeprefix("hpa.")
        if fullname.startswith("hpa.") and old in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name.removeprefix("hpa.")])

    def exec_module(self, module) -> None:
        pass  # the new module ran when create_module imported it


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())
