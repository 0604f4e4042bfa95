"""The prediction-file contract: a CSV with `Id` then 28 probability columns `0`..`27`; a folder's
predictions (predict_tta.py --images) add a last `predicted` column of class names for people to
read, which readers skip.

File names carry the model: `<arch>_<size>_f<fold>_{oof,test}.csv` (hpa.data.layout).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hpa.core.atomic import atomic_write_csv
from hpa.core.checks import require_file
from hpa.data.labels import NUM_CLASSES, validate_id
from hpa.errors import LabelError, PredictionError

COLUMNS = ["Id"] + [str(k) for k in range(NUM_CLASSES)]
NAMES_COLUMN = "predicted"  # the class names a folder's predictions add for reading



def predictions_frame(path: Path, ids: list[str], probs: np.ndarray, n_classes: int = NUM_CLASSES) -> pd.DataFrame:
    """The contract's table for `path`: Id, then one column per class of the model's class set
    (`0`..`n_classes - 1`; the Kaggle 28 unless a published model's set is wider), one row per Id
    (the values as given, so a file's text does not depend on who wrote it)."""
    probs = np.asarray(probs)
    if probs.shape != (len(ids), n_classes):
        raise PredictionError(f"{path}: probabilities of shape {probs.shape} for {len(ids)} Ids")
    df = pd.DataFrame(probs, columns=[str(k) for k in range(n_classes)])
    df.insert(0, "Id", list(ids))
    return df


def write_predictions(path: Path, ids: list[str], probs: np.ndarray) -> None:
    """One prediction file, atomically (a stage's several files: hpa.prediction.inference.PredictionSet)."""
    atomic_write_csv(path, predictions_frame(path, ids, probs))


def read_predictions(path: Path, n_classes: int = NUM_CLASSES) -> tuple[list[str], np.ndarray]:
    """Read and validate a prediction file of a model of `n_classes` classes (the Kaggle 28 unless a
    published model's set is another). Returns (Ids, N x n_classes float array)."""
    columns = ["Id"] + [str(k) for k in range(n_classes)]
    path = Path(path)
    require_file(path, "prediction file", PredictionError)
    try:
        df = pd.read_csv(path, dtype={"Id": str}, keep_default_na=False, na_values=[""])
    except Exception as e:
        raise PredictionError(f"{path}: cannot parse CSV ({e})") from e
    if list(df.columns) == columns + [NAMES_COLUMN]:
        df = df[columns]
    if list(df.columns) != columns:
        raise PredictionError(f"{path}: expected {len(columns)} columns Id,0..{n_classes - 1}; "
                              f"found {len(df.columns)}: {list(df.columns)[:6]}...")
    if df.empty:
        raise PredictionError(f"{path}: has a header and no rows")
    ids = []
    for i, raw in enumerate(df["Id"].tolist()):
        try:
            ids.append(validate_id(raw, f"row {i + 2}: "))
        except LabelError as e:
            raise PredictionError(f"{path}: {e}") from e
    dup = df["Id"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise PredictionError(f"{path}, row {i + 2}: duplicate Id {ids[i]!r}")
    try:
        probs = df[columns[1:]].to_numpy(dtype=np.float64)
    except ValueError as e:
        raise PredictionError(f"{path}: non-numeric probability ({e})") from e
    bad = ~np.isfinite(probs)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise PredictionError(f"{path}, row {r + 2}, column {c}: value {probs[r, c]} is NaN or infinite")
    out = (probs < 0) | (probs > 1)
    if out.any():
        r, c = np.argwhere(out)[0]
        raise PredictionError(f"{path}, row {r + 2}, column {c}: probability {probs[r, c]} outside [0, 1]")
    return ids, probs
