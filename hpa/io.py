"""Reading one HPA sample from any of its real formats, and atomic file writes.

A sample is returned as an H x W x 4 uint8 array in RGBY order (red = microtubules,
green = protein, blue = nucleus, yellow = ER).

Formats, looked up in this order for `<dir>/<Id>_<color>.<ext>`:
- `png`  Kaggle 512 px or full-size grayscale PNG, 8- or 16-bit.
- `tif` / `tiff`  full-size grayscale TIFF, 8- or 16-bit.
- `jpg` / `jpeg`  HPAv18 external images: each channel is stored as an RGB JPEG whose
  colour carries the stain. We take the matching plane (red -> R, green -> G, blue -> B)
  and for yellow the mean of R and G, since yellow is displayed as R + G.

16-bit images are scaled linearly to 8 bits with round(v * 255 / 65535), i.e. the full
16-bit range maps onto 0..255 (no per-image stretching, so intensities stay comparable
between samples).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import tifffile

from hpa.errors import DiskFullError, HPAError, LockedError, SampleError
from hpa.labels import COLORS

# Full-size TIFFs first: a sample stored both ways had its originals fetched on purpose.
EXTENSIONS: tuple[str, ...] = ("tif", "tiff", "png", "jpg", "jpeg")



def channel_path(directory: Path, sample_id: str, color: str, ext: str) -> Path:
    return Path(directory) / f"{sample_id}_{color}.{ext}"


def find_format(directory: Path, sample_id: str) -> str:
    """The extension (as spelt on disk, lower or upper case: `png`, `PNG`...) under which `sample_id`'s red
    channel exists in `directory`."""
    for ext in EXTENSIONS:
        for spelt in (ext, ext.upper()):
            if channel_path(directory, sample_id, "red", spelt).is_file():
                return spelt
    raise SampleError(f"{channel_path(directory, sample_id, 'red', 'png')}: channel file not found "
                      f"(also tried extensions {', '.join(e for e in EXTENSIONS if e != 'png')}, in either case)")


def to_uint8(img: np.ndarray, path: Path) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    raise SampleError(f"{path}: unsupported pixel type {img.dtype} (expected 8- or 16-bit)")


def decode_channel(data: bytes, path: Path | str, color: str, jpg: bool) -> np.ndarray:
    """Decode one stain's PNG or JPEG bytes to a 2-D array; `path` only names it in errors."""
    # libpng/libjpeg only warn on some truncations and return a partly grey image;
    # check the end-of-stream markers so a cut download is never silently accepted.
    if jpg and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise SampleError(f"{path}: truncated JPEG (no end-of-image marker)")
    if not jpg and b"IEND" not in data[-16:]:
        raise SampleError(f"{path}: truncated or invalid PNG (no IEND chunk)")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise SampleError(f"{path}: cannot decode image")
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = img[:, :, :3]
        # cv2 gives BGR planes
        b, g, r = img[:, :, 0], img[:, :, 1], img[:, :, 2]
        if color == "red":
            img = r
        elif color == "green":
            img = g
        elif color == "blue":
            img = b
        else:
            img = ((r.astype(np.uint32) + g) // 2).astype(img.dtype)
    return img


def _read_tiff(source: Path | bytes, name: Path | str) -> np.ndarray:
    """The first page of a TIFF file or of TIFF bytes in memory; a cut file is an error."""
    size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
    with tifffile.TiffFile(io.BytesIO(source) if isinstance(source, bytes) else source) as tif:
        if not tif.pages:
            raise SampleError(f"{name}: cannot read image (no TIFF pages)")
        page = tif.pages[0]
        # tifffile fills missing strips with zeros; a cut file must be an error instead
        end = max((o + n for o, n in zip(page.dataoffsets, page.databytecounts)), default=0)
        if end > size:
            raise SampleError(f"{name}: truncated TIFF ({size} bytes, image data ends at {end})")
        img = page.asarray()
    if img.size == 0:
        raise SampleError(f"{name}: cannot read image (no image data)")
    return img


def decode_tiff_channel(source: Path | bytes, name: Path | str, color: str) -> np.ndarray:
    """One stain of a TIFF (file or bytes) as a 2-D uint8 array: the page itself, or the stain's
    plane of an RGB page (yellow = mean of red and green)."""
    try:
        img = _read_tiff(source, name)
        if img.ndim == 3 and img.shape[-1] in (3, 4):
            img = img[..., "rgb".index(color[0])] if color != "yellow" else \
                ((img[..., 0].astype(np.uint32) + img[..., 1]) // 2).astype(img.dtype)
    except SampleError:
        raise
    except Exception as e:  # tifffile raises many kinds on corrupt files
        raise SampleError(f"{name}: cannot read image ({type(e).__name__}: {e})") from e
    return _single_channel(img, name)


def read_channel(path: Path, color: str) -> np.ndarray:
    """One channel as a 2-D uint8 array."""
    path = Path(path)
    if not path.is_file():
        raise SampleError(f"{path}: channel file not found")
    ext = path.suffix.lower().lstrip(".")
    if ext in ("tif", "tiff"):
        return decode_tiff_channel(path, path, color)
    try:
        img = decode_channel(path.read_bytes(), path, color, jpg=ext in ("jpg", "jpeg"))
    except SampleError:
        raise
    except Exception as e:
        raise SampleError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e
    return _single_channel(img, path)


def _single_channel(img: np.ndarray, path: Path | str) -> np.ndarray:
    if img.ndim != 2:
        raise SampleError(f"{path}: expected a single-channel image, got shape {img.shape}")
    return to_uint8(img, path)


def decode_jpeg_channel(data: bytes, name: str, color: str) -> np.ndarray:
    """An HPAv18 stain JPEG (RGB) from memory -> the stain's 2-D uint8 plane."""
    return _single_channel(decode_channel(data, name, color, jpg=True), name)


def read_sample(directory: Path, sample_id: str, ext: str | None = None) -> np.ndarray:
    """Read the 4 channel files of one sample as H x W x 4 uint8 (RGBY)."""
    ext = ext or find_format(directory, sample_id)
    planes = []
    for color in COLORS:
        p = channel_path(directory, sample_id, color, ext)
        planes.append(read_channel(p, color))
        if planes[-1].shape != planes[0].shape:
            first = channel_path(directory, sample_id, COLORS[0], ext)
            raise SampleError(f"{p}: size {planes[-1].shape} differs from {first} {planes[0].shape}")
    return np.stack(planes, axis=-1)


def write_channel_png(path: Path, plane: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", plane)
    if not ok:
        raise SampleError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, buf.tobytes())


def write_sample_png(directory: Path, sample_id: str, img: np.ndarray) -> None:
    """Write an H x W x 4 RGBY uint8 array as the 4 Kaggle-style grayscale PNGs."""
    for k, color in enumerate(COLORS):
        write_channel_png(channel_path(directory, sample_id, color, "png"), np.ascontiguousarray(img[:, :, k]))


def _file_mode() -> int:
    """The mode `open()` would give a new file under the current umask (mkstemp's is 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask



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


def _mkstemp(path: Path, suffix: str) -> tuple[int, str]:
    """A temporary file beside `path`; failing, one line naming `path`, never the temporary name."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
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
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_save(path: Path, writer: Callable[[Path], None]) -> None:
    """Call `writer(tmp_path)` and move the result onto `path` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def atomic_save_npy(path: Path, arr) -> None:
    """An array as `path` (.npy), atomically."""
    import numpy as np

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


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ids_sha256(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()



@contextlib.contextmanager
def dir_lock(directory: Path, what: str = "directory") -> Iterator[None]:
    """Hold `<directory>/.lock` for the block, so two processes never write one run or output
    directory at once. The lock is an flock: the kernel drops it when its holder dies (Ctrl-C,
    kill -9, an OOM kill, a preempted job), so a stale lock is taken over without anyone deleting
    it. The file says who holds it, for the refusal message. Directories the lock had to create
    are removed again if the block wrote nothing into them (a refused start leaves no trace)."""
    directory = Path(directory)
    created = [p for p in (directory, *directory.parents) if not p.exists()]
    path = directory / ".lock"
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
        if created and [p.name for p in directory.iterdir()] == [".lock"]:
            path.unlink()
            for p in created:  # innermost first
                with contextlib.suppress(OSError):
                    p.rmdir()
        os.close(fd)  # releases the flock


def check_outputs(outputs: dict[str, Path], inputs: dict[str, list[Path]]) -> None:
    """Before any work: no output may be one of the inputs, nor two outputs one path. The refusal
    names the path and both of its roles."""
    seen: dict[Path, str] = {}
    for role, paths in inputs.items():
        for p in paths:
            seen.setdefault(Path(p).resolve(), f"input ({role})")
    outs: dict[Path, str] = {}
    for role, p in outputs.items():
        key = Path(p).resolve()
        if key in outs:
            raise HPAError(f"{p}: would be written twice, as the {outs[key]} and as the {role}; choose another output")
        if key in seen:
            raise HPAError(f"{p}: is an {seen[key]} and would be overwritten as the {role}; choose another output path")
        outs[key] = role
