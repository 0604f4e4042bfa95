"""HPA protein-localisation toolkit (Zhang et al. 2021 as software). The Python entry points are
importable from here: prepare, make_folds, train_fold, predict, fit_thresholds, blend (hpa.api),
export_bundle and load_bundle (hpa.bundle)."""

API = {"prepare": "api", "make_folds": "api", "train_fold": "api", "predict": "api", "fit_thresholds": "api",
       "blend": "api", "export_bundle": "bundle", "load_bundle": "bundle"}


def __getattr__(name: str):
    # imported on first use, so `import hpa.labels` stays light (no torch)
    if name in API:
        import importlib

        return getattr(importlib.import_module(f"hpa.{API[name]}"), name)
    raise AttributeError(f"module 'hpa' has no attribute {name!r}")
