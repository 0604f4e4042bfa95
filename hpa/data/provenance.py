"""What a run or a prediction records about its inputs, and the checks against it. Provenance
compares content (sha256 of the tables, of the Id lists), never locations, so a dataset that moves
keeps its runs and predictions usable."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hpa.core.digests import file_sha256, ids_sha256
from hpa.data.layout import folds_companion
from hpa.errors import RunError


def data_provenance(tables: list[Path], folds: Path, train_ids: list[str], val_ids: list[str]) -> dict:
    """What a run was trained on, by content: the sha256 of each label table and of the folds
    table, and of the sorted train and validation Ids."""
    return {"labels": {p.name: file_sha256(p) for p in tables}, "folds_sha256": file_sha256(folds),
            "n_train": len(train_ids), "n_val": len(val_ids),
            "train_ids_sha256": ids_sha256(sorted(train_ids)), "val_ids_sha256": ids_sha256(sorted(val_ids))}


SAME_DATA = ("labels", "folds_sha256", "train_ids_sha256", "val_ids_sha256")


def same_data(a: dict, b: dict) -> bool:
    return {k: a.get(k) for k in SAME_DATA} == {k: b.get(k) for k in SAME_DATA}


def check_provenance(run: Path, saved: dict, data_dir: Path, folds: Path) -> None:
    """Refuse to use a run with labels or folds other than those it was trained on."""
    if not saved:
        raise RunError(f"{run}: its checkpoint does not record the folds and labels it was trained on; "
                       "retrain it with this version")
    files = [("labels", Path(data_dir) / name, sha) for name, sha in saved["labels"].items()]
    for what, path, sha in files + [("folds", Path(folds), saved["folds_sha256"])]:
        if not path.is_file():
            raise RunError(f"{path.absolute()}: {what} file not found (the run {run} was trained with it)")
        if file_sha256(path) != sha:
            raise RunError(f"{run}: was trained with other {what} than {path.absolute()} now holds (sha256 "
                           f"{sha[:12]}... vs {file_sha256(path)[:12]}...); retrain the run or restore the file")


def dropped_note(folds: Path) -> str:
    """Why make_folds left samples out, from the `<folds>_dropped.csv` it writes beside the folds."""
    from hpa.data.labels import count_reasons

    path = folds_companion(folds, "dropped")
    if not path.is_file():
        return ""
    reasons = pd.read_csv(path)["reason"].tolist()
    return f": {count_reasons(reasons)}" if reasons else ""
