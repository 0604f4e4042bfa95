"""What every script shares: its argument parser and the wrapper that turns the toolkit's own
errors into one line, `error: ...`, and exit code 1 (a traceback means a bug, never bad input)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from hpa.errors import HPAError, Stopped

# One default for every --workers: enough processes to keep a GPU fed, no more than the cores.
DEFAULT_WORKERS = min(8, os.cpu_count() or 1)


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


class Parser(argparse.ArgumentParser):
    """argparse with defaults in --help and usage errors as one line with exit code 1."""

    def __init__(self, doc: str, **kw):
        super().__init__(description=doc.split("\n\n")[0], epilog=doc, formatter_class=_Formatter, **kw)

    def error(self, message: str):
        raise SystemExit(_fail(f"{self.prog}: {message} (see --help)"))


def positive_int(v: str) -> int:
    if not v.lstrip("-").isdigit() or int(v) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v!r}")
    return int(v)


def non_negative_int(v: str) -> int:
    if not v.lstrip("-").isdigit() or int(v) < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v!r}")
    return int(v)


def class_index(v: str) -> int:
    from hpa.data.labels import NUM_CLASSES

    try:
        k = int(v)
    except ValueError:
        k = -1
    if not 0 <= k < NUM_CLASSES:
        raise argparse.ArgumentTypeError(f"{v!r} is not a class number 0..{NUM_CLASSES - 1}")
    return k


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 1


def one_line(e: BaseException) -> str:
    """The message of `e` on one line. An error raised in a DataLoader worker comes back with the
    worker's traceback folded into its message; its last line is the original message."""
    text = str(e)
    if isinstance(e, OSError) and e.filename and e.strerror:
        text = f"{e.filename}: {e.strerror.lower()}"
    if "Original Traceback" in text:
        last = [ln for ln in text.splitlines() if ln.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].endswith("Error") else last
    return " ".join(text.split()) or type(e).__name__


def run(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Call `main(argv)`; the toolkit's errors, OS errors (a full disk, a permission) and Ctrl-C
    end the process with one line on stderr."""
    try:
        main(argv)
    except Stopped as e:
        print(f"stopped: {one_line(e)}", file=sys.stderr, flush=True)
        sys.exit(1)
    except (HPAError, OSError) as e:
        sys.exit(_fail(one_line(e)))
    except KeyboardInterrupt:
        _fail("interrupted")
        sys.exit(130)
