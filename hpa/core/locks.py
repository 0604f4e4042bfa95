"""Advisory directory locks: two processes never write one run, store or output tree at once."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from hpa.errors import HPAError, LockedError


@contextlib.contextmanager
def dir_lock(lock: Path, what: str = "directory") -> Iterator[None]:
    """Hold the lock file `lock` (hpa.data.layout.lock_file of a directory) for the block, so two
    processes never write one run or output directory at once. The lock is an flock: the kernel
    drops it when its holder dies (Ctrl-C, kill -9, an OOM kill, a preempted job), so a stale lock
    is taken over without anyone deleting it. The file says who holds it, for the refusal message.
    Directories the lock had to create are removed again if the block wrote nothing into them (a
    refused start leaves no trace)."""
    path = Path(lock)
    directory = path.parent
    created = [p for p in (directory, *directory.parents) if not p.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:  # read-only, not a directory, no permission: before any work is done
        raise HPAError(f"{directory.absolute()}: {what} cannot be written ({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").split() or ["?", "?"]
            raise LockedError(f"{directory}: {what} in use by process {holder[0]} on host {holder[-1]}; wait for it to "
                              "finish or stop it, then run the same command again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        if created and [p.name for p in directory.iterdir()] == [path.name]:
            path.unlink()
            for p in created:  # innermost first
                with contextlib.suppress(OSError):
                    p.rmdir()
        os.close(fd)  # releases the flock
