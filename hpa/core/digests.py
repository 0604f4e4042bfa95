"""Content digests of files and of Id lists (provenance, bundle checks)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Read in chunks: a checkpoint or a downloaded weight file can be gigabytes, and only its digest is wanted."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    return file_digest(path, "sha256")


def ids_sha256(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()
