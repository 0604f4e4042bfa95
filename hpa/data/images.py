"""Reading and writing one HPA sample, in any of its real formats.

A sample is returned as an H x W x 4 uint8 array in RGBY order (red = microtubules,
green = protein, blue = nucleus, yellow = ER).

Files are matched as a user's file system shows them: `<dir>/<Id>_<color>.<ext>` with the stain
suffix and the extension in any case (`_Red.PNG`), each stain in any of the formats below. A
full-size TIFF beside a PNG of the same stain is the original fetched on purpose, and is read; any
other two files for one stain are refused by name. Formats:
- `png`  Kaggle 512 px or full-size grayscale PNG, 8- or 16-bit.
- `tif` / `tiff`  full-size grayscale TIFF, 8- or 16-bit.
- `jpg` / `jpeg`  HPAv18 external images: each channel is stored as an RGB JPEG whose
  colour carries the stain. We take the matching plane (red -> R, green -> G, blue -> B)
  and for yellow the mean of R and G, since yellow is displayed as R + G.

16-bit images are scaled linearly to 8 bits with round(v * 255 / 65535), i.e. the full
16-bit range maps onto 0..255 (no per-image stretching, so intensities stay comparable
between samples).

Both sides of an image must be at least MIN_SIDE pixels: smaller ones are refused by name, never
predicted (see MIN_SIDE for why 32)."""

from __future__ import annotations

import functools
import io
import os
import re
from pathlib import Path

import cv2
import numpy as np
import tifffile

from hpa.core.atomic import atomic_write_bytes
from hpa.data.labels import COLORS
from hpa.errors import SampleError

# The smallest side an image may have. The CNN backbones reduce their input by 32 before pooling
# (five stride-2 stages), so below 32 px their last feature map has less than one cell and a 16 px
# ViT patch grid less than 2 x 2: what comes out describes the padding and the interpolation, not the
# cells. It is also the demo generator's smallest side. A Kaggle image is 512 px, the demo's 64-128.
MIN_SIDE = 32

# Full-size TIFFs first: a sample stored both ways had its originals fetched on purpose.
EXTENSIONS: tuple[str, ...] = ("tif", "tiff", "png", "jpg", "jpeg")


def channel_path(directory: Path, sample_id: str, color: str, ext: str) -> Path:
    return Path(directory) / f"{sample_id}_{color}.{ext}"


STAIN_FILE = re.compile(rf"^(?P<id>.+)_(?P<color>{'|'.join(COLORS)})\.(?P<ext>{'|'.join(EXTENSIONS)})$", re.IGNORECASE)


@functools.lru_cache(maxsize=16)
def _listing(directory: str, mtime_ns: int) -> dict[tuple[str, str], tuple[str, ...]]:
    out: dict[tuple[str, str], list[str]] = {}
    with os.scandir(directory) as entries:
        for e in entries:
            m = STAIN_FILE.match(e.name)
            if m:
                out.setdefault((m["id"], m["color"].lower()), []).append(e.name)
    return {k: tuple(sorted(v)) for k, v in out.items()}


def stain_index(directory: Path, fresh: bool = False) -> dict[tuple[str, str], tuple[str, ...]]:
    """(Id, stain) -> the names of its files in `directory`, read once per state of the folder (a
    folder of 100,000 samples is listed once, not once per sample); `fresh` lists it again."""
    try:
        mtime = os.stat(directory).st_mtime_ns
    except OSError:
        raise SampleError(f"{directory}: no such image folder") from None
    if fresh:
        _listing.cache_clear()
    return _listing(str(directory), mtime)


def stain_files(directory: Path, sample_id: str) -> dict[str, Path]:
    """The file of each stain of `sample_id` in `directory` (R, G, B, Y order), matched in any case of
    the stain suffix and the extension; a missing stain, or two files for one stain, is one line."""
    index = stain_index(directory)
    if any((sample_id, c) not in index for c in COLORS):  # the folder may have changed within its timestamp's tick
        index = stain_index(directory, fresh=True)
    files = {}
    for color in COLORS:
        names = index.get((sample_id, color), ())
        if not names:
            raise SampleError(f"{channel_path(directory, sample_id, color, 'png')}: channel file not found (any case "
                              f"of _{color} and of the extensions {', '.join(EXTENSIONS)})")
        tiffs = [n for n in names if n.rsplit(".", 1)[1].lower() in ("tif", "tiff")]
        chosen = tiffs or list(names)
        if len(chosen) > 1:
            raise SampleError(f"{Path(directory) / chosen[0]} and {chosen[1]}: two files for the {color} stain of "
                              f"{sample_id}; keep one")
        files[color] = Path(directory) / chosen[0]
    return files


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


def check_side(path: Path | str, height: int, width: int) -> None:
    """One line naming the file when an image is too small to mean anything (MIN_SIDE); the
    readers of pixels and of headers (hpa.prediction.inference.check_raw_sample) both ask here."""
    if min(height, width) < MIN_SIDE:
        raise SampleError(f"{path}: {width} x {height} px is smaller than the minimum side of {MIN_SIDE} px "
                          "(too few pixels to show a cell's compartments)")


def read_sample(directory: Path, sample_id: str) -> np.ndarray:
    """Read the 4 channel files of one sample as H x W x 4 uint8 (RGBY)."""
    files = stain_files(directory, sample_id)
    planes = []
    for color, p in files.items():
        planes.append(read_channel(p, color))
        if planes[-1].shape != planes[0].shape:
            raise SampleError(f"{p}: size {planes[-1].shape} differs from {files['red']} {planes[0].shape}")
    check_side(files["red"], *planes[0].shape)
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
