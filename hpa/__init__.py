"""HPA protein-localisation toolkit (Zhang et al. 2021 as software). The Python entry points are in
`hpa.api` and importable from here: prepare, make_folds, train_fold, predict, fit_thresholds, blend."""

API = ("prepare", "make_folds", "train_fold", "predict", "fit_thresholds", "blend")


def __getattr__(name: str):
    # imported on first use, so `import hpa.labels` stays light (no torch)
    if name in API:
        from hpa import api

        return getattr(api, name)
    raise AttributeError(f"module 'hpa' has no attribute {name!r}")
