"""Reading and writing one HPA sample, in any of its real formats.

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
between samples)."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import tifffile

from hpa.core.atomic import atomic_write_bytes
from hpa.data.labels import COLORS
from hpa.errors import SampleError

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
