"""Checks of the paths a command is given, before any work is done."""

from __future__ import annotations

from pathlib import Path

from hpa.errors import HPAError


def require_dir(path: Path, flag: str) -> Path:
    """An existing directory given by `flag`, or one line naming the absolute path looked at."""
    if not Path(path).is_dir():
        raise HPAError(f"{flag} {path}: no such directory ({Path(path).absolute()})")
    return Path(path)
