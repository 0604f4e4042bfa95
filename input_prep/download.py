"""Download the Kaggle competition files, the full-size originals of its images where you have an
address for them, and the HPA v18 external images.

    python input_prep/download.py --data-dir data/hpa --kaggle
    python input_prep/download.py --data-dir data/hpa --full-size 'https://HOST/hpa/{split}/{id}_{color}.tif'
    python input_prep/download.py --data-dir data/hpa --external [TABLE.csv] --connections 32 \
        [--base-url http://v18.proteinatlas.org/images] [--max-side 2048]

--external without a table fetches the 74,606 HPAv18 samples of the label table shipped with the
project (hpa/data/HPAv18RBGY_wodpl.csv.gz; source and licence in hpa/data/HPAv18_SOURCE.md).

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
import sys
from collections.abc import Callable
from pathlib import Path

from hpa import cli
from hpa.data.download import (
    DEFAULT_BASE,
    check_address,
    check_template,
    download_external,
    download_full_size,
    download_kaggle,
)
from hpa.data.layout import HPAV18_TABLE
from hpa.errors import ConfigError


def argument_type(check: Callable[[str], str]) -> Callable[[str], str]:
    """A check of the library as an argparse type: its one-line ConfigError becomes a usage error."""
    def parse(value: str) -> str:
        try:
            return check(value)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


check_base_url = argument_type(check_address)
full_size_template = argument_type(check_template)


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
    failed = 0
    if a.kaggle:
        download_kaggle(a.data_dir)
    if a.full_size:
        failed += download_full_size(a.data_dir, a.full_size, a.connections, a.timeout, a.retries, a.backoff, a.limit)
    if a.external:
        failed += download_external(a.external, a.data_dir, a.base_url, a.connections, a.timeout, a.retries,
                                    a.backoff, a.max_side, a.limit)
    return 1 if failed else 0


if __name__ == "__main__":
    cli.run(lambda argv: sys.exit(main(argv)))
