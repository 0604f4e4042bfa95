"""The real 2018 model outputs in ../shared/data: 4 top-team test predictions (11,702 x 28, in
sample_submission order) and the 258 test rows whose labels are known from leak.csv. Used by the
tests and benchmarks; the directory is ../shared/data beside the project (or $HPA_SHARED_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from hpa.data.labels import labels_matrix, read_ids, read_labels
from hpa.errors import PredictionError

SHARED = Path(os.environ.get("HPA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MODELS = {"team5inceptionv3_800": "team5_inceptionv3_800_test.npy",
          "team10seresnext50_512": "team10_seresnext50_inceptionv3_test.csv",
          "team5xception_512": "team5_xception_512_test.npy", "team4gapnet_512": "team4_gapnet_5fold_test.npy"}


def load_real(shared: Path = SHARED):
    """(sample_submission Ids, labelled Ids, their row numbers, labels N x 28, {model: 11702 x 28})."""
    sub_ids = read_ids(shared / "kaggle-hpa-2018" / "sample_submission.csv")
    # leak.csv repeats some Ids with different label sets; their union reproduces the published scores
    leak = read_labels(shared / "kaggle-hpa-2018" / "leak.csv", duplicates="union")
    pos = {s: i for i, s in enumerate(sub_ids)}
    keep = [k for k, s in enumerate(leak["Id"]) if s in pos]
    ids = [leak["Id"][k] for k in keep]
    preds = {}
    for name, f in MODELS.items():
        path = shared / "test-predictions" / f
        if f.endswith(".csv"):
            df = pd.read_csv(path)
            if df["Id"].tolist() != sub_ids:
                raise PredictionError(f"{path}: rows are not in sample_submission order")
            preds[name] = df.iloc[:, 1:].to_numpy()
        else:
            preds[name] = np.load(path)
    return sub_ids, ids, [pos[s] for s in ids], labels_matrix(leak)[keep], preds
