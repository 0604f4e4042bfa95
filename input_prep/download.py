"""Download the Kaggle competition files, the full-size originals of its images where you have an
address for them, and the HPA v18 external images.

    python input_prep/download.py --data-dir data/hpa --kaggle
    python input_prep/download.py --data-dir data/hpa --full-size 'https://HOST/hpa/{split}/{id}_{color}.tif'
    python input_prep/download.py --data-dir data/hpa --external [TABLE.csv] --connections 32 \
        [--base-url http://v18.proteinatlas.org/images] [--max-side 2048]

--external without a table fetches the 74,606 HPAv18 samples of the label table shipped with the
project (input_prep/HPAv18RBGY_wodpl.csv.gz; source and licence in input_prep/HPAv18_SOURCE.md).

Kaggle: through the official `kaggle` package, credentials from kaggle.json in $KAGGLE_CONFIG_DIR,
~/.kaggle or ~/.config/kaggle, or the KAGGLE_USERNAME / KAGGLE_KEY variables (you must have
accepted the competition rules on kaggle.com).

External: for each Id of the CSV, all 4 colours from `<base>/<part before the first _>/<rest>_<color>.jpg`
(the address scheme the 2018 solutions used). Each file is fetched with retries and exponential
backoff on HTTP 5xx, timeouts, cut bodies and dropped connections; it must decode (a JPEG with
its end marker); it is then stored the way Kaggle stores images, one grayscale PNG per stain
(`external/<Id>_<color>.png`, the stain's plane taken from the RGB JPEG as hpa.data.images documents),
written atomically. Files already stored and decodable are skipped, so a re-run resumes.
What still fails is listed in `<out>/download_failures.csv` (exit code 1); the samples whose 4
stains are all present are listed with their labels in `<out>/external.csv`.

Full size: Kaggle's API serves only the 512 px PNGs; the 2048/3072 px TIFF originals the paper
trained on were published separately. --full-size takes an address template with `{id}` and
`{color}` (and optionally `{split}`: train or test) where a copy of them is served, and fetches
the 4 stains of every Id of train.csv and sample_submission.csv into train/ and test/ as
`<Id>_<color>.tif`, beside the PNGs: readers take the TIFF when both exist. Each TIFF must decode
whole (not cut) before it is stored, byte for byte, atomically; stored ones are skipped, failures
listed in `<out>/download_failures_full_size.csv` (exit code 1), so a re-run resumes.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np
import pandas as pd

from hpa import cli
from hpa.core.atomic import atomic_write_bytes, atomic_write_csv
from hpa.core.runtime import progress
from hpa.data.images import decode_jpeg_channel, decode_tiff_channel, read_channel, write_channel_png
from hpa.data.labels import COLORS, read_labels, read_table, validate_id
from hpa.errors import LabelError, SampleError

DEFAULT_BASE = "http://v18.proteinatlas.org/images"
COMPETITION = "human-protein-atlas-image-classification"


class TransientError(Exception):
    """Worth another try: 5xx, timeout, cut body, dropped connection."""


def external_url(base: str, sample_id: str, color: str) -> str:
    folder, _, rest = sample_id.partition("_")
    if not rest:
        raise LabelError(f"external Id {sample_id!r} has no '_' (expected e.g. 10580_1610_C1_1)")
    return f"{base.rstrip('/')}/{folder}/{rest}_{color}.jpg"


def check_base_url(base: str) -> str:
    scheme = urlparse(base).scheme
    if scheme not in ("http", "https"):
        raise argparse.ArgumentTypeError(f"{base!r}: only http:// and https:// addresses are allowed")
    return base


def fetch(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (scheme checked)
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


def full_size_template(value: str) -> str:
    check_base_url(value)
    missing = [k for k in ("{id}", "{color}") if k not in value]
    if missing:
        raise argparse.ArgumentTypeError(f"{value!r}: no {' or '.join(missing)} in the address; e.g. "
                                         "'https://HOST/hpa/{split}/{id}_{color}.tif'")
    try:
        value.format(split="train", id="x", color="red")
    except (KeyError, IndexError, ValueError) as e:
        raise argparse.ArgumentTypeError(
            f"{value!r}: only {{split}}, {{id}} and {{color}} may be filled in ({e})") from None
    return value


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


def download_full_size(out: Path, template: str, connections: int, timeout: float, retries: int,
                       backoff: float, limit: int | None = None) -> int:
    tables = {"train": out / "train.csv", "test": out / "sample_submission.csv"}
    if not any(p.is_file() for p in tables.values()):
        raise LabelError(f"{out}: no train.csv or sample_submission.csv to take Ids from; run --kaggle first")
    jobs = []
    for split, path in tables.items():
        if not path.is_file():
            continue
        ids = [validate_id(i, f"{path}, row {k + 2}: ") for k, i in enumerate(read_table(path, ("Id",))["Id"])]
        (out / split).mkdir(parents=True, exist_ok=True)
        jobs += [(sid, c, template.format(split=split, id=sid, color=c), out / split / f"{sid}_{c}.tif")
                 for sid in ids[:limit] for c in COLORS]
    failures = _run_downloads(jobs, lambda url, dst, c: download_tiff(url, dst, c, timeout, retries, backoff),
                              "full-size images", connections)
    _report_failures(failures, out / "download_failures_full_size.csv", len(jobs))
    print(f"{len(jobs) - len(failures)} of {len(jobs)} full-size stain TIFFs stored in "
          f"{', '.join(str(out / s) for s, p in tables.items() if p.is_file())}")
    return 1 if failures else 0


def download_external(table: Path, out: Path, base: str, workers: int, timeout: float, retries: int,
                      backoff: float, max_side: int | None, limit: int | None = None) -> int:
    labels = read_labels(table)
    if limit:
        labels = labels.iloc[:limit]
    dst_dir = out / "external"
    dst_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(sid, c, external_url(base, sid, c), dst_dir / f"{sid}_{c}.png") for sid in labels["Id"] for c in COLORS]
    failures = _run_downloads(
        jobs, lambda url, dst, c: download_one(url, dst, c, timeout, retries, backoff, max_side), "external images",
        workers)
    failed_ids = {f[0] for f in failures}
    done = labels[~labels["Id"].isin(failed_ids)]
    atomic_write_csv(out / "external.csv", done[["Id", "Target"]])
    _report_failures(failures, out / "download_failures.csv", len(jobs))
    print(f"{len(done)} of {len(labels)} external samples complete in {dst_dir}; labels in {out / 'external.csv'}")
    return 1 if failures else 0


def kaggle_credentials() -> Path | None:
    """Where the kaggle package will find a token, or None."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return Path("environment")
    dirs = [Path(os.environ["KAGGLE_CONFIG_DIR"])] if os.environ.get("KAGGLE_CONFIG_DIR") else \
        [Path.home() / ".kaggle", Path.home() / ".config" / "kaggle"]
    return next((d / "kaggle.json" for d in dirs if (d / "kaggle.json").is_file()), None)


def download_kaggle(out: Path) -> int:
    if kaggle_credentials() is None:
        where = os.environ.get("KAGGLE_CONFIG_DIR") or "~/.kaggle"
        print(f"error: no Kaggle credentials: put your API token in {Path(where) / 'kaggle.json'} (kaggle.com -> "
              "Settings -> Create New Token) or set KAGGLE_USERNAME and KAGGLE_KEY", file=sys.stderr)
        return 2
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi  # authenticates on import
    except ImportError:
        print("error: the kaggle package is missing: pip install -r requirements.txt", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: Kaggle authentication failed: {e}", file=sys.stderr)
        return 2
    if (out / "train.csv").is_file() and (out / "sample_submission.csv").is_file() and (out / "train").is_dir():
        print(f"{out}: the Kaggle files are already there")
        return 0
    api = KaggleApi()
    api.authenticate()
    out.mkdir(parents=True, exist_ok=True)
    api.competition_download_files(COMPETITION, path=str(out), quiet=False)  # skips a complete archive
    extract_archive(out / f"{COMPETITION}.zip", out)
    print(f"Kaggle files in {out}: train.csv, sample_submission.csv, train/, test/")
    return 0


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


HPAV18_TABLE = Path(__file__).with_name("HPAv18RBGY_wodpl.csv.gz")


def main(argv: list[str] | None = None) -> int:
    ap = cli.Parser(__doc__)
    ap.add_argument("--data-dir", type=Path, required=True, help="dataset directory to download into")
    ap.add_argument("--kaggle", action="store_true", help="download the competition files")
    ap.add_argument("--external", type=Path, nargs="?", const=HPAV18_TABLE,
                    help="Id,Target CSV of HPA v18 samples to fetch (no value: the shipped HPAv18 table)")
    ap.add_argument("--full-size", type=full_size_template, metavar="ADDRESS",
                    help="fetch the 2048/3072 px TIFF originals from this address template with {id}, {color} "
                         "and optionally {split}")
    ap.add_argument("--base-url", default=DEFAULT_BASE, type=check_base_url, help="HPA image server")
    ap.add_argument("--connections", type=cli.positive_int, default=16,
                    help="parallel downloads (network-bound threads, not --workers processes)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    ap.add_argument("--retries", type=cli.non_negative_int, default=5, help="retries per file")
    ap.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds, doubled each time")
    ap.add_argument("--max-side", type=int, help="downscale stored images to at most this side")
    ap.add_argument("--limit", type=cli.positive_int,
                    help="only the first N samples of --external / of each --full-size split (trial runs)")
    a = ap.parse_args(argv)
    if not (a.kaggle or a.external or a.full_size):
        ap.error("nothing to do: give --kaggle, --full-size ADDRESS and/or --external [CSV]")
    status = 0
    if a.kaggle:
        status = max(status, download_kaggle(a.data_dir))
    if a.full_size and status < 2:
        status = max(status, download_full_size(a.data_dir, a.full_size, a.connections, a.timeout, a.retries,
                                                a.backoff, a.limit))
    if a.external:
        status = max(status, download_external(a.external, a.data_dir, a.base_url, a.connections, a.timeout,
                                               a.retries, a.backoff, a.max_side, a.limit))
    return status


if __name__ == "__main__":
    cli.run(lambda argv: sys.exit(main(argv)))
