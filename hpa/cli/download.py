r"""Download the Kaggle competition files, the full-size originals of its images where you have an
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
from collections.abc import Callable
from pathlib import Path

from hpa import api
from hpa.cli import Parser, options
from hpa.data.download import DEFAULT_BASE, Transfer, check_address, check_template
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


def build_parser() -> Parser:
    ap = Parser(__doc__, "input_prep/download.py")
    options.data_dir(ap, help="dataset directory to download into")
    ap.add_argument("--kaggle", action="store_true", help="download the competition files")
    ap.add_argument("--external", type=Path, nargs="?", const=HPAV18_TABLE,
                    help="Id,Target CSV of HPA v18 samples to fetch (no value: the shipped HPAv18 table)")
    ap.add_argument("--full-size", type=argument_type(check_template), metavar="ADDRESS",
                    help="fetch the 2048/3072 px TIFF originals from this address template with {id}, {color} "
                         "and optionally {split}")
    ap.add_argument("--base-url", default=DEFAULT_BASE, type=argument_type(check_address), help="HPA image server")
    t = Transfer()
    ap.add_argument("--connections", type=options.positive_int, default=t.connections,
                    help="parallel downloads (network-bound threads, not --workers processes)")
    ap.add_argument("--timeout", type=float, default=t.timeout, help="seconds per request")
    ap.add_argument("--retries", type=options.non_negative_int, default=t.retries, help="retries per file")
    ap.add_argument("--backoff", type=float, default=t.backoff, help="first retry delay in seconds, doubled each time")
    ap.add_argument("--max-side", type=options.positive_int, help="downscale stored images to at most this side")
    ap.add_argument("--limit", type=options.positive_int,
                    help="only the first N samples of --external / of each --full-size split (trial runs)")
    return ap


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    failed = api.download(a.data_dir, kaggle=a.kaggle, external=a.external, full_size=a.full_size,
                          base_url=a.base_url, max_side=a.max_side, limit=a.limit,
                          transfer=Transfer(a.connections, a.timeout, a.retries, a.backoff))
    return 1 if failed else 0  # each failure is listed above and in the failures table


if __name__ == "__main__":
    from hpa.cli import run

    run(main)
