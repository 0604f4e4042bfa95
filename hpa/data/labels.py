"""The label contract: 28 HPA classes, `Id,Target` tables and safe sample Ids."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from hpa.core.checks import require_file
from hpa.errors import LabelError

# Index order of the Kaggle HPA 2018 competition (the Target integers).
CLASS_NAMES: tuple[str, ...] = (
    "Nucleoplasm",
    "Nuclear membrane",
    "Nucleoli",
    "Nucleoli fibrillar center",
    "Nuclear speckles",
    "Nuclear bodies",
    "Endoplasmic reticulum",
    "Golgi apparatus",
    "Peroxisomes",
    "Endosomes",
    "Lysosomes",
    "Intermediate filaments",
    "Actin filaments",
    "Focal adhesion sites",
    "Microtubules",
    "Microtubule ends",
    "Cytokinetic bridge",
    "Mitotic spindle",
    "Microtubule organizing center",
    "Centrosome",
    "Lipid droplets",
    "Plasma membrane",
    "Cell junctions",
    "Mitochondria",
    "Aggresome",
    "Cytosol",
    "Cytoplasmic bodies",
    "Rods & rings",
)
NUM_CLASSES = len(CLASS_NAMES)
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow")

# Kaggle Ids are UUIDs, HPAv18 Ids look like 10580_1610_C1_1. Anything that could
# leave the data directory when joined into a path is refused.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")



def validate_id(sample_id: object, where: str = "") -> str:
    """Return `sample_id` as str if it is safe to use in a file name, else raise LabelError."""
    s = str(sample_id) if sample_id is not None else ""
    if not s or not _ID_RE.fullmatch(s) or ".." in s:
        raise LabelError(f"{where}invalid sample Id {s!r}: only letters, digits, '_', '-', '.' "
                         "are allowed, no path separators and no '..'")
    return s


def parse_target(target: object, where: str = "") -> list[int]:
    """Parse a Target string such as '7 1 2 0' into sorted unique class indices."""
    if not isinstance(target, str) or not target.strip():
        raise LabelError(f"{where}empty or missing Target {target!r}")
    out = set()
    for tok in target.split():
        if not (tok.isascii() and tok.isdigit()):  # '²' and '١' are digits to str.isdigit, not to int()
            raise LabelError(f"{where}malformed Target {target!r}: {tok!r} is not a class index")
        k = int(tok)
        if k >= NUM_CLASSES:
            raise LabelError(f"{where}unknown class index {k} in Target {target!r} "
                             f"(valid: 0..{NUM_CLASSES - 1})")
        out.add(k)
    return sorted(out)


def format_target(classes: list[int] | np.ndarray) -> str:
    """Class indices -> Target string, ascending."""
    return " ".join(str(int(k)) for k in sorted(set(int(c) for c in classes)))


def to_multihot(classes: list[int]) -> np.ndarray:
    v = np.zeros(NUM_CLASSES, dtype=np.float32)
    v[list(classes)] = 1.0
    return v


def from_multihot(v: np.ndarray) -> list[int]:
    return [int(k) for k in np.flatnonzero(np.asarray(v) > 0.5)]


def read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    path = require_file(path, "table", LabelError)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as e:  # pandas raises several types for broken CSVs
        raise LabelError(f"{path}: cannot parse CSV ({e})") from e
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LabelError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    if df.empty:  # every table the toolkit reads is one of samples: none is never what was meant
        raise LabelError(f"{path}: has a header and no rows")
    return df


def read_ids(path: Path, column: str = "Id", allow_duplicates: bool = False) -> list[str]:
    """Read and validate the Id column of any CSV (unsafe Ids, and duplicates unless allowed, are errors)."""
    df = read_table(path, (column,))
    ids = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(df[column].tolist()):
        row = i + 2  # 1-based, header is row 1
        sid = validate_id(raw, f"{path}, row {row}: ")
        if sid in seen and not allow_duplicates:
            raise LabelError(f"{path}, row {row}: duplicate Id {sid!r} (first at row {seen[sid]})")
        seen.setdefault(sid, row)
        ids.append(sid)
    return ids


def read_labels(path: Path, duplicates: str = "error") -> pd.DataFrame:
    """Read an `Id,Target` CSV. Returns a frame with Id, Target (normalised) and a `y` matrix in attrs.

    Every row is validated; the error names the file and the 1-based row (header = row 1).
    `duplicates="union"` merges repeated Ids into one row with the union of their labels (the
    community's leak tables list some test Ids twice, with label sets that differ).
    """
    if duplicates not in ("error", "union"):
        raise ValueError(f"duplicates must be 'error' or 'union', got {duplicates!r}")
    df = read_table(path, ("Id", "Target"))
    ids = read_ids(path, allow_duplicates=duplicates == "union")
    merged: dict[str, set[int]] = {}
    for i, (sid, t) in enumerate(zip(ids, df["Target"].tolist())):
        merged.setdefault(sid, set()).update(parse_target(t, f"{path}, row {i + 2}: "))
    out = pd.DataFrame({"Id": list(merged), "Target": [format_target(c) for c in merged.values()]})
    y = np.zeros((len(merged), NUM_CLASSES), dtype=np.float32)
    for i, classes in enumerate(merged.values()):
        y[i, list(classes)] = 1.0
    out.attrs["y"] = y
    return out


def labels_matrix(df: pd.DataFrame) -> np.ndarray:
    """The N x 28 multi-hot matrix of a frame returned by read_labels (recomputed if attrs were lost)."""
    y = df.attrs.get("y")
    if y is None or len(y) != len(df):
        y = np.stack([to_multihot(parse_target(t)) for t in df["Target"]]) if len(df) else \
            np.zeros((0, NUM_CLASSES), np.float32)
    return y


def read_folds(path: Path) -> dict[str, int]:
    """Id -> fold of a folds table (fold -1: left out by make_folds)."""
    if not Path(path).is_file():
        raise LabelError(f"{path}: folds table not found; run input_prep/make_folds.py first")
    df = read_table(path, ("Id", "fold"))
    out, row_of = {}, {}
    for i, (sid, f) in enumerate(zip(df["Id"], df["fold"])):
        if not (f.isascii() and f.lstrip("-").isdigit()):
            raise LabelError(f"{path}, row {i + 2}: fold {f!r} is not an integer")
        sid = validate_id(sid, f"{path}, row {i + 2}: ")
        if sid in out:  # in two folds it would train and validate at once; "last row wins" is never meant
            raise LabelError(f"{path}, row {i + 2}: duplicate Id {sid!r} (first at row {row_of[sid]})")
        out[sid], row_of[sid] = int(f), i + 2
    # the folds are 0..K-1, and -1 (left out): a stray 7 or -3 would train in every fold and never validate
    used = sorted(set(out.values()) - {-1})
    if any(f < -1 for f in used) or used != list(range(len(used))):
        bad = next(f for f in used if f < -1 or f >= len(used) or f not in range(len(used))) if used else None
        row = next(k for k, f in enumerate(df["fold"]) if int(f) == bad) + 2
        raise LabelError(f"{path}, row {row}: fold {bad} is outside the table's folds (0..K-1 for K folds, or -1 for "
                         f"left out; this table has {sorted(set(out.values()))})")
    return out


def read_label_tables(paths: list[Path]) -> pd.DataFrame:
    """The union of several Id,Target tables (Kaggle train.csv, HPAv18 external.csv), in order, with
    a `table` column (0, 1, ...); an Id in two tables is an error naming both."""
    frames, seen = [], {}
    for path in paths:
        df = read_labels(path)
        for i in df["Id"]:
            if i in seen:
                raise LabelError(f"{path}: Id {i!r} is also in {seen[i]}")
            seen[i] = path
        frames.append(df)
    out = pd.DataFrame({"Id": [i for f in frames for i in f["Id"]], "Target": [t for f in frames for t in f["Target"]],
                        "table": np.repeat(np.arange(len(frames)), [len(f) for f in frames])})
    out.attrs["y"] = np.concatenate([labels_matrix(f) for f in frames]) if frames else np.zeros((0, NUM_CLASSES))
    return out


def count_reasons(reasons: list[str]) -> str:
    """'3 near-duplicate, 1 duplicate group with conflicting labels': the reasons of make_folds'
    left-out samples, counted with the twin they name stripped."""
    counts = pd.Series(list(reasons), dtype=str).str.replace(r" of .*", "", regex=True).value_counts()
    return ", ".join(f"{n} {why}" for why, n in counts.items())
