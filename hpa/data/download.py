"""Downloads of the dataset: the Kaggle competition files, full-size originals of its images from an
address template, and the HPA v18 external images, each file fetched with retries, verified before
it is stored (atomically), skipped when already stored, so a re-run resumes. `input_prep/download.py`
is the command line; its docstring says what each source is and where it goes.

External images: for each Id, all 4 stains from `<base>/<part before the first _>/<rest>_<color>.jpg`
(the address scheme of the 2018 solutions), each an RGB JPEG stored as the grayscale plane of its
stain (hpa.data.images), one PNG per stain as Kaggle stores them. Retried: HTTP 5xx and 429,
timeouts, cut bodies, dropped connections; a 4xx is final.
"""

from __future__ import annotations

import http.client
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np
import pandas as pd

from hpa.core.atomic import atomic_write_bytes, atomic_write_csv
from hpa.core.runtime import progress
from hpa.data import layout
from hpa.data.images import channel_path, decode_jpeg_channel, decode_tiff_channel, read_channel, write_channel_png
from hpa.data.labels import COLORS, read_labels, read_table, validate_id
from hpa.errors import ConfigError, LabelError, SampleError, TransientError

DEFAULT_BASE = "http://v18.proteinatlas.org/images"
COMPETITION = "human-protein-atlas-image-classification"
KAGGLE_TOKEN = "kaggle.json"  # the kaggle package's name for the API token


def external_url(base: str, sample_id: str, color: str) -> str:
    folder, _, rest = sample_id.partition("_")
    if not rest:
        raise LabelError(f"external Id {sample_id!r} has no '_' (expected e.g. 10580_1610_C1_1)")
    return f"{base.rstrip('/')}/{folder}/{rest}_{color}.jpg"


def check_address(address: str) -> str:
    """An http(s) address, a base or a template: anything else (file:// among them) is refused, so a
    download never reads local files."""
    if urlparse(address).scheme not in ("http", "https"):
        raise ConfigError(f"{address!r}: only http:// and https:// addresses are allowed")
    return address


def check_template(template: str) -> str:
    """A full-size address template: http(s), with {id} and {color}, and {split} the only other field."""
    check_address(template)
    missing = [k for k in ("{id}", "{color}") if k not in template]
    if missing:
        raise ConfigError(f"{template!r}: no {' or '.join(missing)} in the address; e.g. "
                          "'https://HOST/hpa/{split}/{id}_{color}.tif'")
    try:
        template.format(split="train", id="x", color="red")
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"{template!r}: only {{split}}, {{id}} and {{color}} may be filled in ({e})") from None
    return template


def fetch(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (check_address by every caller)
            expected = r.headers.get("Content-Length")
            data = r.read()
    except urllib.error.HTTPError as e:
        if e.code >= 500 or e.code == 429:
            raise TransientError(f"HTTP {e.code}") from e
        raise  # 4xx: the file does not exist, no retry
    except http.client.IncompleteRead as e:
        raise TransientError(f"body cut at {len(e.partial)} of {len(e.partial) + (e.expected or 0)} bytes") from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:  # timeouts, resets, cut bodies
        raise TransientError(f"{type(e).__name__}: {getattr(e, 'reason', e)}") from e
    if expected is not None and len(data) != int(expected):
        raise TransientError(f"body cut at {len(data)} of {expected} bytes")
    return data


def _stored_ok(path: Path, color: str) -> bool:
    if not path.is_file():
        return False
    try:
        read_channel(path, color)
        return True
    except SampleError:
        return False


def _retrying(url: str, store, timeout: float, retries: int, backoff: float) -> str | None:
    """Fetch `url` and hand its bytes to `store` (which verifies and writes them), retrying
    transient failures with exponential backoff. Returns None on success, else the last error."""
    error = "not tried"
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            store(fetch(url, timeout))  # verified from memory: nothing partial touches disk
            return None
        except (TransientError, SampleError) as e:
            error = str(e)
        except urllib.error.HTTPError as e:
            return f"HTTP {e.code}"
    return error


def download_one(url: str, dst: Path, color: str, timeout: float, retries: int, backoff: float,
                 max_side: int | None) -> str | None:
    """Fetch, verify, convert and store one HPAv18 stain (RGB JPEG -> its grayscale plane as PNG)."""
    if _stored_ok(dst, color):
        return None

    def store(data: bytes) -> None:
        plane = decode_jpeg_channel(data, url, color)
        if max_side and max(plane.shape) > max_side:
            f = max_side / max(plane.shape)
            plane = cv2.resize(plane, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        write_channel_png(dst, np.ascontiguousarray(plane))

    return _retrying(url, store, timeout, retries, backoff)


def download_tiff(url: str, dst: Path, color: str, timeout: float, retries: int, backoff: float) -> str | None:
    """Fetch one full-size stain TIFF; stored as served once it decodes whole."""
    if _stored_ok(dst, color):
        return None

    def store(data: bytes) -> None:
        decode_tiff_channel(data, url, color)
        atomic_write_bytes(dst, data)

    return _retrying(url, store, timeout, retries, backoff)


def _run_downloads(jobs: list[tuple], fetch_one, desc: str, connections: int) -> list[tuple]:
    """Run `fetch_one(url, dst, color)` over (sample, color, url, dst) jobs; the failures."""
    failures = []
    with ThreadPoolExecutor(connections) as pool:
        futs = {pool.submit(fetch_one, url, dst, c): (sid, c, url) for sid, c, url, dst in jobs}
        for fut in progress(as_completed(futs), total=len(futs), desc=desc, unit="file"):
            err = fut.result()
            if err:
                failures.append((*futs[fut], err))
    return failures


def _report_failures(failures: list[tuple], fail_csv: Path, n_jobs: int) -> None:
    if failures:
        atomic_write_csv(fail_csv, pd.DataFrame(sorted(failures), columns=["Id", "color", "url", "error"]))
        print(f"{len(failures)} of {n_jobs} files failed ({len({f[0] for f in failures})} samples), listed in "
              f"{fail_csv}; run the same command again to retry them")
    else:
        fail_csv.unlink(missing_ok=True)


@dataclass(frozen=True)
class Transfer:
    """How files are fetched: parallel connections (network-bound threads), seconds per request,
    retries per file, and the first retry's delay in seconds (doubled each time)."""
    connections: int = 16
    timeout: float = 30.0
    retries: int = 5
    backoff: float = 1.0


def download_full_size(out: Path, template: str, *, transfer: Transfer = Transfer(), limit: int | None = None) -> int:
    """The full-size TIFFs of every Id of the split tables; the number of files that failed."""
    connections, timeout, retries, backoff = transfer.connections, transfer.timeout, transfer.retries, transfer.backoff
    check_template(template)
    tables = {split: layout.split_table(out, split) for split in ("train", "test")}
    if not any(p.is_file() for p in tables.values()):
        raise LabelError(f"{out}: no train.csv or sample_submission.csv to take Ids from; run --kaggle first")
    jobs = []
    for split, path in tables.items():
        if not path.is_file():
            continue
        ids = [validate_id(i, f"{path}, row {k + 2}: ") for k, i in enumerate(read_table(path, ("Id",))["Id"])]
        layout.raw_dir(out, split).mkdir(parents=True, exist_ok=True)
        jobs += [(sid, c, template.format(split=split, id=sid, color=c), channel_path(layout.raw_dir(out, split), sid,
                                                                                      c, "tif"))
                 for sid in ids[:limit] for c in COLORS]
    failures = _run_downloads(jobs, lambda url, dst, c: download_tiff(url, dst, c, timeout, retries, backoff),
                              "full-size images", connections)
    _report_failures(failures, layout.download_failures(out, "full_size"), len(jobs))
    print(f"{len(jobs) - len(failures)} of {len(jobs)} full-size stain TIFFs stored in "
          f"{', '.join(str(out / s) for s, p in tables.items() if p.is_file())}")
    return len(failures)


def download_external(table: Path, out: Path, base: str, *, transfer: Transfer = Transfer(),
                      max_side: int | None = None, limit: int | None = None) -> int:
    """The HPAv18 samples of `table` into external/ and external.csv; the number of files that failed."""
    workers, timeout, retries, backoff = transfer.connections, transfer.timeout, transfer.retries, transfer.backoff
    check_address(base)
    labels = read_labels(table)
    if limit:
        labels = labels.iloc[:limit]
    dst_dir = layout.raw_dir(out, "external")
    dst_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(sid, c, external_url(base, sid, c), channel_path(dst_dir, sid, c, "png"))
            for sid in labels["Id"] for c in COLORS]
    failures = _run_downloads(
        jobs, lambda url, dst, c: download_one(url, dst, c, timeout, retries, backoff, max_side), "external images",
        workers)
    failed_ids = {f[0] for f in failures}
    done = labels[~labels["Id"].isin(failed_ids)]
    table_out = layout.split_table(out, "external")
    atomic_write_csv(table_out, done[["Id", "Target"]])
    _report_failures(failures, layout.download_failures(out, "external"), len(jobs))
    print(f"{len(done)} of {len(labels)} external samples complete in {dst_dir}; labels in {table_out}")
    return len(failures)


def kaggle_credentials() -> Path | None:
    """Where the kaggle package will find a token, or None."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return Path("environment")
    dirs = [Path(os.environ["KAGGLE_CONFIG_DIR"])] if os.environ.get("KAGGLE_CONFIG_DIR") else \
        [Path.home() / ".kaggle", Path.home() / ".config" / "kaggle"]
    return next((d / KAGGLE_TOKEN for d in dirs if (d / KAGGLE_TOKEN).is_file()), None)


def download_kaggle(out: Path) -> None:
    """The competition's archive through the official `kaggle` package, unpacked into `out`."""
    if kaggle_credentials() is None:
        where = os.environ.get("KAGGLE_CONFIG_DIR") or "~/.kaggle"
        raise ConfigError(f"no Kaggle credentials: put your API token in {Path(where) / KAGGLE_TOKEN} (kaggle.com -> "
                          "Settings -> Create New Token) or set KAGGLE_USERNAME and KAGGLE_KEY")
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi  # authenticates on import
    except ImportError:
        raise ConfigError("the kaggle package is missing: pip install -r requirements.txt") from None
    except OSError as e:
        raise ConfigError(f"Kaggle authentication failed: {e}") from None
    if all(layout.split_table(out, s).is_file() for s in ("train", "test")) and layout.raw_dir(out, "train").is_dir():
        print(f"{out}: the Kaggle files are already there")
        return
    api = KaggleApi()
    api.authenticate()
    out.mkdir(parents=True, exist_ok=True)
    api.competition_download_files(COMPETITION, path=str(out), quiet=False)  # skips a complete archive
    extract_archive(out / f"{COMPETITION}.zip", out)
    print(f"Kaggle files in {out}: train.csv, sample_submission.csv, train/, test/")


def extract_archive(archive: Path, out: Path) -> None:
    """Unpack the competition archive into `out` (train.csv, sample_submission.csv, train/, test/),
    skipping members already there with their full size, so an interrupted unpack resumes."""
    import zipfile

    try:
        with zipfile.ZipFile(archive) as z:
            for info in progress(z.infolist(), desc="unzip", unit="file"):
                target = out / info.filename
                if info.is_dir() or (target.is_file() and target.stat().st_size == info.file_size):
                    continue
                if ".." in Path(info.filename).parts or Path(info.filename).is_absolute():
                    raise SampleError(f"{archive}: unsafe member name {info.filename!r}")
                with z.open(info) as src:
                    atomic_write_bytes(target, src.read())
    except zipfile.BadZipFile as e:
        raise SampleError(f"{archive}: not a complete zip archive ({e}); delete it and download again") from None
