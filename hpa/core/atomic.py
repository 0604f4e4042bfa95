"""Every file the toolkit writes goes through here: atomically (a reader never sees a half-written
output, whatever stops the writer), with the umask's modes, and never over one of the inputs the
running command declared (`reading`)."""

from __future__ import annotations

import contextlib
import contextvars
import errno
import io
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from hpa.errors import DiskFullError, HPAError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _file_mode() -> int:
    """The mode `open()` would give a new file under the current umask (mkstemp's is 0600)."""
    return 0o666 & ~_umask()


def _disk_full(e: BaseException, path: Path) -> DiskFullError | None:
    """`e` as a DiskFullError when it is one: ENOSPC/EDQUOT, or any write failure (a serializer's
    RuntimeError says nothing of space) on a filesystem with almost nothing left."""
    if isinstance(e, DiskFullError | KeyboardInterrupt | SystemExit):
        return None
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return None
    full = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
    if not full and not free < 64 * 2**20:
        return None
    return DiskFullError(f"{path}: no space left on device ({free / 2**20:.1f} MiB free in {path.parent.absolute()}); "
                         "free some space and run the same command again (the previous file is kept)")


# The inputs of the command now running, as (role, path) pairs: declared by each API call (and by
# the code that finds more of them, e.g. the pictures of a folder), checked by every writer below.
_INPUTS: contextvars.ContextVar[tuple[tuple[str, Path], ...]] = contextvars.ContextVar("inputs", default=())


@contextlib.contextmanager
def reading(inputs: dict[str, object]) -> Iterator[None]:
    """Declare the files a command reads, by role (a path, a list of paths, or None): until the block
    ends, no output may be written over one of them, nor may a folder output replace a folder that
    holds one. Nested declarations add to the outer ones."""
    pairs = []
    for role, value in inputs.items():
        for p in ([value] if isinstance(value, str | os.PathLike) else (value or ())):
            if p is not None:
                pairs.append((role, Path(p)))
    token = _INPUTS.set(_INPUTS.get() + tuple(pairs))
    try:
        yield
    finally:
        _INPUTS.reset(token)


def _same(a: Path, b: Path) -> bool:
    """One file under two names: links resolved, and case folded where the file system folds it."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _inside(path: Path, folder: Path) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(folder)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def refuse_inputs(path: Path, *, folder: bool = False, role: str = "") -> None:
    """Raise when writing `path` would replace a declared input file, put a file inside a declared
    input folder (a bundle is read whole), or (`folder`: `path` is replaced whole) remove an input."""
    path = Path(path)
    for kind, p in _INPUTS.get():
        if p.is_dir():
            hit = _inside(path, p) or (folder and _inside(p, path))
            what = f"is inside the {kind} input {p}" if _inside(path, p) else f"holds the {kind} input {p}"
        else:
            hit = (folder and _inside(p, path)) or _same(p, path)  # by name while neither exists yet
            what = f"holds the {kind} input {p}" if folder and hit and not path.is_file() else f"is an input ({kind})"
        if hit:
            as_role = f" as the {role}" if role else ""
            raise HPAError(f"{path}: {what} and would be overwritten{as_role}; choose another output path")


def _owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _temp_prefix(path: Path) -> str:
    """Temporary names beside `path` carry the writer's host and process, so that a later writer can
    tell the debris of a killed one (kill -9 runs no cleanup) from a live writer's work."""
    return f".{path.name}.{_owner()}."


def _reap(path: Path) -> None:
    """Remove the temporary files and folders beside `path` left by writers of this host that are
    no longer running (another host's, or a live process's, are left alone)."""
    head = f".{path.name}.{socket.gethostname()}-"
    try:
        siblings = [p for p in path.parent.iterdir() if p.name.startswith(head)]
    except OSError:
        return
    for p in siblings:
        pid = p.name[len(head):].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive (or not ours to signal): its work
        except ProcessLookupError:
            pass
        except OSError:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()


def _mkstemp(path: Path, suffix: str) -> tuple[int, str]:
    """A temporary file beside `path`; failing, one line naming `path`, never the temporary name."""
    refuse_inputs(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _reap(path)
        return tempfile.mkstemp(prefix=_temp_prefix(path), suffix=suffix, dir=path.parent)
    except OSError as e:
        raise HPAError(f"{path}: cannot be written ({e.strerror or e} in {path.parent.absolute()})") from None


def _named_for_user(e: BaseException, temps: dict[str, Path]) -> HPAError | None:
    """An OSError about one of our temporary files, restated about the file the user asked for."""
    if isinstance(e, OSError) and not isinstance(e, HPAError):
        for name in (e.filename, getattr(e, "filename2", None)):
            if name is not None and str(name) in temps:
                return HPAError(f"{temps[str(name)]}: cannot be written ({e.strerror or e})")
    return None


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it is renamed onto `path`, on error removed.

    The rename is atomic on POSIX, so a reader never sees a half-written file, whatever
    kills the writer. The file gets the umask's mode, as any other tool's output would.
    """
    path = Path(path)
    fd, tmp = _mkstemp(path, ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        full = _disk_full(e, path)
        if full:
            raise full from e
        named = _named_for_user(e, {tmp: path})
        if named:
            raise named from e
        raise


@contextlib.contextmanager
def atomic_outputs() -> Iterator[Callable[[Path], Path]]:
    """All-or-nothing outputs of one stage: `with atomic_outputs() as tmp:` hands out a temp
    path per output (`tmp(path)`); only when the block succeeds are they all renamed into place,
    so a failure part-way leaves every earlier output as it was."""
    pending: list[tuple[Path, Path]] = []

    def reserve(path: Path) -> Path:
        path = Path(path)
        fd, tmp = _mkstemp(path, ".tmp" + path.suffix)
        os.close(fd)
        pending.append((Path(tmp), path))
        return Path(tmp)

    try:
        yield reserve
        for tmp, _ in pending:
            os.chmod(tmp, _file_mode())
        for tmp, path in pending:
            os.replace(tmp, path)
    except BaseException as e:
        full = _disk_full(e, pending[-1][1]) if pending else None
        if full:
            raise full from e
        named = _named_for_user(e, {str(t): p for t, p in pending})
        if named:
            raise named from e
        raise
    finally:
        for tmp, _ in pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


@contextlib.contextmanager
def staged_dir(final: Path):
    """A folder built beside `final` and swapped in on success (the old one removed), or removed
    on error: a bundle or a report's images are never half old, half new."""
    final = Path(final)
    refuse_inputs(final, folder=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    _reap(final)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(final), suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would hide a bundle or a report from a colleague
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def atomic_write_stream(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """`write(f)` into a temporary file beside `path`, flushed to the disk, then renamed onto it: a
    large output (a checkpoint) goes straight to the file, never a second copy in memory."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write_stream(path, lambda f: f.write(data))


def atomic_hard_link(source: Path, path: Path) -> bool:
    """Make `path` a second name of the file `source`, atomically (a link beside `path`, renamed onto
    it); False where the filesystem has no hard links, for the caller to write a copy instead. The
    two names stay independent: an atomic write to either later replaces only that name."""
    path = Path(path)
    fd, tmp = _mkstemp(path, ".link")  # a fresh name beside `path`, freed for the link
    os.close(fd)
    os.unlink(tmp)
    try:
        os.link(source, tmp)
    except OSError:
        return False
    try:
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        named = _named_for_user(e, {tmp: path})
        if named:
            raise named from e
        raise
    return True


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_save(path: Path, writer: Callable[[Path], None]) -> None:
    """Call `writer(tmp_path)` and move the result onto `path` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def atomic_save_npy(path: Path, arr) -> None:
    """An array as `path` (.npy), atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object, because np.save would append .npy to a name
            np.save(f, np.ascontiguousarray(arr))

    atomic_save(path, write)


def csv_text(df) -> str:
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue()


def atomic_write_csv(path: Path, df) -> None:
    atomic_write_text(path, csv_text(df))


def check_outputs(outputs: dict[str, Path]) -> None:
    """Before any work: no output may be a declared input (`reading`), nor two outputs one path. The
    refusal names the path and its roles."""
    outs: dict[str, str] = {}
    for role, p in outputs.items():
        refuse_inputs(Path(p), role=role)
        key = os.path.normcase(os.path.realpath(p))
        if key in outs:
            raise HPAError(f"{p}: would be written twice, as the {outs[key]} and as the {role}; choose another output")
        outs[key] = role
