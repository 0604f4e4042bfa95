"""Download the Kaggle competition files and the HPA v18 external images.

    python input_prep/download.py --data-dir data/hpa --kaggle
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
(`external/<Id>_<color>.png`, the stain's plane taken from the RGB JPEG as hpa.io documents),
written atomically. Files already stored and decodable are skipped, so a re-run resumes.
What still fails is listed in `<out>/download_failures.csv` (exit code 1); the samples whose 4
stains are all present are listed with their labels in `<out>/external.csv`.
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
from tqdm import tqdm

from hpa import cli
from hpa.io import (
    SampleError,
    atomic_write_bytes,
    atomic_write_csv,
    decode_jpeg_channel,
    read_channel,
    write_channel_png,
)
from hpa.labels import COLORS, LabelError, read_labels

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


def download_one(url: str, dst: Path, color: str, timeout: float, retries: int, backoff: float,
                 max_side: int | None) -> str | None:
    """Fetch, verify, convert and store one stain. Returns None on success, else the last error."""
    if _stored_ok(dst, color):
        return None
    error = "not tried"
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            # decoded from memory (end marker checked, stain plane picked): nothing partial touches disk
            plane = decode_jpeg_channel(fetch(url, timeout), url, color)
            if max_side and max(plane.shape) > max_side:
                f = max_side / max(plane.shape)
                plane = cv2.resize(plane, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
            write_channel_png(dst, np.ascontiguousarray(plane))
            return None
        except (TransientError, SampleError) as e:
            error = str(e)
        except urllib.error.HTTPError as e:
            return f"HTTP {e.code}"
    return error


def download_external(table: Path, out: Path, base: str, workers: int, timeout: float, retries: int,
                      backoff: float, max_side: int | None, limit: int | None = None) -> int:
    labels = read_labels(table)
    if limit:
        labels = labels.iloc[:limit]
    dst_dir = out / "external"
    dst_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(sid, c, external_url(base, sid, c)) for sid in labels["Id"] for c in COLORS]
    failures = []
    with ThreadPoolExecutor(workers) as pool:
        futs = {pool.submit(download_one, url, dst_dir / f"{sid}_{c}.png", c, timeout, retries, backoff, max_side):
                (sid, c, url) for sid, c, url in jobs}
        for fut in tqdm(as_completed(futs), total=len(futs), desc="external images", unit="file"):
            err = fut.result()
            if err:
                failures.append((*futs[fut], err))
    failed_ids = {f[0] for f in failures}
    done = labels[~labels["Id"].isin(failed_ids)]
    atomic_write_csv(out / "external.csv", done[["Id", "Target"]])
    fail_csv = out / "download_failures.csv"
    if failures:
        atomic_write_csv(fail_csv, pd.DataFrame(sorted(failures), columns=["Id", "color", "url", "error"]))
        print(f"{len(failures)} of {len(jobs)} files failed ({len(failed_ids)} samples), listed in {fail_csv}; "
              "run the same command again to retry them")
    else:
        fail_csv.unlink(missing_ok=True)
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
            for info in tqdm(z.infolist(), desc="unzip", unit="file"):
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
    ap.add_argument("--base-url", default=DEFAULT_BASE, type=check_base_url, help="HPA image server")
    ap.add_argument("--connections", type=cli.positive_int, default=16,
                    help="parallel downloads (network-bound threads, not --workers processes)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    ap.add_argument("--retries", type=cli.non_negative_int, default=5, help="retries per file")
    ap.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds, doubled each time")
    ap.add_argument("--max-side", type=int, help="downscale stored images to at most this side")
    ap.add_argument("--limit", type=int, help="only the first N samples of --external (trial runs)")
    a = ap.parse_args(argv)
    if not a.kaggle and not a.external:
        ap.error("nothing to do: give --kaggle and/or --external CSV")
    status = 0
    if a.kaggle:
        status = max(status, download_kaggle(a.data_dir))
    if a.external:
        status = max(status, download_external(a.external, a.data_dir, a.base_url, a.connections, a.timeout,
                                               a.retries, a.backoff, a.max_side, a.limit))
    return status


if __name__ == "__main__":
    cli.run(lambda argv: sys.exit(main(argv)))
