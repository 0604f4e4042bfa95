"""Checks of the paths a command is given, before any work is done."""

from __future__ import annotations

from pathlib import Path

from hpa.errors import HPAError


def require_file(path: Path, what: str, error: type[HPAError] = HPAError) -> Path:
    """An existing file, or one line saying whether nothing or a folder is there (`what` the file is:
    a table, a prediction file ...)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {f'a folder, not a {what}' if path.is_dir() else 'file not found'}")
    return path


def require_dir(path: Path, flag: str) -> Path:
    """An existing directory given by `flag`, or one line naming the absolute path looked at."""
    if not Path(path).is_dir():
        raise HPAError(f"{flag} {path}: no such directory ({Path(path).absolute()})")
    return Path(path)
