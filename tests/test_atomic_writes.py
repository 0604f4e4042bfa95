"""Atomic writes: all or nothing, and with the user's modes: files and folders the toolkit creates follow the umask, as
any other tool's would, whichever writer made them (a shared disk's colleague can read a bundle,
a report, a store and a run)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from hpa.core.atomic import (
    atomic_outputs,
    atomic_save_npy,
    atomic_write_stream,
    atomic_write_text,
    staged_dir,
)


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_every_writer_follows_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "new" / "a.txt", "x")  # the folder it had to create too
        atomic_save_npy(tmp_path / "b.npy", np.zeros(3))
        atomic_write_stream(tmp_path / "c.bin", lambda f: f.write(b"x"))
        with atomic_outputs() as tmp:
            tmp(tmp_path / "d.csv").write_text("x")
        with staged_dir(tmp_path / "bundle") as d:
            (d / "weights").mkdir()
            (d / "weights" / "w.bin").write_bytes(b"x")
    finally:
        os.umask(old)
    files, folders = 0o666 & ~mask, 0o777 & ~mask
    for f in ("new/a.txt", "b.npy", "c.bin", "d.csv", "bundle/weights/w.bin"):
        assert mode(tmp_path / f) == files, f
    for d in ("new", "bundle", "bundle/weights"):
        assert mode(tmp_path / d) == folders, d


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_outputs() as tmp:
            tmp(tmp_path / "b.txt").write_text("y")
    finally:
        os.umask(old)
    for name in ("a.txt", "b.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode


def test_atomic_outputs_are_all_or_nothing(tmp_path):
    (tmp_path / "a.csv").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_outputs() as tmp:
            tmp(tmp_path / "a.csv").write_text("new")
            tmp(tmp_path / "b.csv").write_text("new")
            raise RuntimeError("the third output failed")
    assert (tmp_path / "a.csv").read_text() == "old" and not (tmp_path / "b.csv").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["a.csv"]  # no temp files left


def test_an_output_named_like_an_input_not_written_yet_is_refused(tmp_path):
    """A check made before the input exists (predict_tta.py checks the cell stage's outputs before
    the image stage writes the predictions) compares the names."""
    from hpa.core.atomic import check_outputs, reading
    from hpa.errors import HPAError

    preds = tmp_path / "out" / "cells.csv"
    with reading({"predictions": preds}), pytest.raises(HPAError, match="is an input .predictions."):
        check_outputs({"table": tmp_path / "out" / ".." / "out" / "cells.csv"})
    with reading({"predictions": preds}):
        check_outputs({"table": tmp_path / "out" / "other.csv"})


def test_a_killed_writers_temporary_files_are_removed_by_the_next_writer(tmp_path):
    """kill -9 leaves a writer's staging folder or temporary file beside its output; the next writer
    of that output on this host removes those of processes that are gone, and leaves a live
    process's and another host's alone."""
    import socket
    import subprocess
    import sys

    from hpa.core.atomic import atomic_write_text

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    host = socket.gethostname()
    dead_dir = tmp_path / f".masks.{host}-{gone}.abc.tmp"
    dead_file = tmp_path / f".t.csv.{host}-{gone}.xyz.tmp"
    live_dir = tmp_path / f".masks.{host}-{os.getppid()}.def.tmp"
    other_host = tmp_path / f".masks.another-node-{gone}.ghi.tmp"
    for d in (dead_dir, live_dir, other_host):
        d.mkdir()
        (d / "1.png").write_bytes(b"x")
    dead_file.write_text("half")
    with staged_dir(tmp_path / "masks") as tmp:
        (tmp / "2.png").write_bytes(b"y")
    atomic_write_text(tmp_path / "t.csv", "whole")
    assert not dead_dir.exists() and not dead_file.exists()
    assert live_dir.is_dir() and other_host.is_dir()
    assert (tmp_path / "masks" / "2.png").is_file() and (tmp_path / "t.csv").read_text() == "whole"
