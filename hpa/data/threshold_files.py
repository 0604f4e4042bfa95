"""The thresholds file: the JSON a threshold fit writes (its name and companions: hpa.data.layout,
THRESHOLDS and threshold_outputs), and the 28 thresholds read back from it or from blend.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hpa.data.labels import NUM_CLASSES
from hpa.errors import ConfigError


def thresholds_text(result: dict) -> str:
    return json.dumps(result, indent=1)


def read_thresholds(path: Path) -> np.ndarray:
    """The 28 thresholds of a thresholds JSON written by find_thresholds.py (or blend.json)."""
    try:
        thr = np.asarray(json.loads(Path(path).read_text())["thresholds"], dtype=float)
    except FileNotFoundError:
        raise ConfigError(f"--thresholds {path}: file not found") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"--thresholds {path}: not a thresholds JSON from find_thresholds.py ({e})") from None
    if thr.shape != (NUM_CLASSES,) or not np.all((thr >= 0) & (thr <= 1)):
        raise ConfigError(f"--thresholds {path}: expected {NUM_CLASSES} thresholds in [0, 1]")
    return thr
