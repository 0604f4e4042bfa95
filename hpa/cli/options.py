"""The flags every script shares, each built in one place so that it means one thing, takes one kind
of value and has one default everywhere (docs/reference/vocabulary.md lists them), and the argparse
types that check a value where it is typed."""

from __future__ import annotations

import argparse
from pathlib import Path

from hpa.core.runtime import AMP_MODES, DEFAULT_WORKERS
from hpa.core.values import count
from hpa.data import layout
from hpa.errors import ConfigError


def _type(check, low: int):
    def parse(v: str) -> int:
        try:
            return count("", int(v) if v.isascii() and v.lstrip("-").isdigit() else v, low)
        except ConfigError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {v!r}") from None
    parse.__name__ = check
    return parse


positive_int = _type("positive_int", 1)
non_negative_int = _type("non_negative_int", 0)


def class_index(v: str) -> int:
    from hpa.data.labels import NUM_CLASSES

    k = int(v) if v.isascii() and v.lstrip("-").isdigit() else -1
    if not 0 <= k < NUM_CLASSES:
        raise argparse.ArgumentTypeError(f"{v!r} is not a class number 0..{NUM_CLASSES - 1}")
    return k


def data_dir(ap: argparse.ArgumentParser, *, required: bool = True, help: str = "dataset directory (Kaggle layout: "
             "train.csv, train/, test/, sample_submission.csv)") -> None:
    ap.add_argument("--data-dir", type=Path, required=required, help=help)


def images(ap: argparse.ArgumentParser, help: str = "a folder of own images (<Id>_red.png and its 3 sibling "
           "stains; png, tif, tiff, jpg or jpeg)") -> None:
    ap.add_argument("--images", type=Path, help=help)


def out(ap: argparse.ArgumentParser, what: str, *, default: Path | None = None, required: bool = False) -> None:
    """--out: always one output file."""
    ap.add_argument("--out", type=Path, default=default, required=required, metavar="FILE", help=what)


def out_dir(ap: argparse.ArgumentParser, what: str, *, default: Path | None = None, required: bool = False) -> None:
    """--out-dir: always an output folder."""
    ap.add_argument("--out-dir", type=Path, default=default, required=required, metavar="DIR", help=what)


def runs(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--runs", type=Path, default=layout.DEFAULT_RUNS, metavar="DIR",
                    help="runs root: a run is <runs>/<arch>_<size>/f<fold>/")


def folds(ap: argparse.ArgumentParser, what: str, default: list[int] | None = None) -> None:
    """--folds: which folds to use (never how many to make: that is --n-folds)."""
    ap.add_argument("--folds", type=non_negative_int, nargs="+", default=default, metavar="K", help=what)


def n_folds(ap: argparse.ArgumentParser, what: str = "number of folds the training table is split into",
            default: int | None = None) -> None:
    # a plain int: the library's check (at least 2) names the flag and the reason
    ap.add_argument("--n-folds", type=int, default=default, metavar="K", help=what)


def device(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--device", default="auto", help="auto (a GPU when there is one) | cpu | cuda | cuda:N")


def workers(ap: argparse.ArgumentParser, what: str = "worker processes that read images") -> None:
    ap.add_argument("--workers", type=non_negative_int, default=DEFAULT_WORKERS, metavar="N", help=what)


def amp(ap: argparse.ArgumentParser) -> None:
    """--amp: None when not given, so a command can tell a choice from the default (bf16 everywhere)."""
    ap.add_argument("--amp", choices=AMP_MODES, help="mixed precision of the forward passes (fp16 needs CUDA) [bf16]")


def _views(v: str) -> tuple[str, ...]:
    from hpa.prediction.inference import parse_tta

    try:
        return parse_tta(v, "--tta")
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix(f"--tta {v}: ")) from None


def tta(ap: argparse.ArgumentParser, default: str | None = None) -> None:
    ap.add_argument("--tta", type=_views, default=default, metavar="N|NAMES",
                    help="dihedral views averaged: a count 1..8 (id, hflip, vflip, rot180, rot90, rot270, transpose, "
                         "antitranspose, in this order) or names, e.g. id,hflip (default: all 8)" if default is None
                    else "dihedral views: a count 1..8 or names")


def batch_size(ap: argparse.ArgumentParser, default: int = 32) -> None:
    ap.add_argument("--batch-size", type=positive_int, default=default, metavar="N", help="images per forward pass")


def seed(ap: argparse.ArgumentParser, what: str = "random seed") -> None:
    ap.add_argument("--seed", type=int, default=0, help=what)


def accept_licence(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--accept-licence", action="store_true", help="accept the licence of weights that need it "
                    "(cell-dino-hpa: non-commercial research use)")
