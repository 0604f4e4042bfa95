"""The command line, in one place: every script's parser and main (one module per command in this
package: parse, one `hpa.api` call, print), the shared flags (hpa.cli.options), and the wrapper
that turns the toolkit's own errors into one line, `error: ...`, and exit code 1 (a traceback means
a bug, never bad input). The scripts at the top of the checkout only run these mains; the toolkit's
own child processes (torchrun's per-GPU training, SLURM jobs) run them as `python -m hpa.cli.<name>`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from hpa.errors import HPAError, Stopped

# each script as a user types it -> its module in this package
SCRIPTS = {"train_fold.py": "train_fold", "predict_tta.py": "predict_tta", "find_thresholds.py": "find_thresholds",
           "blend.py": "blend", "export_bundle.py": "export_bundle", "embed.py": "embed", "ablate.py": "ablate",
           "input_prep/download.py": "download", "input_prep/prepare.py": "prepare", "input_prep/dedup.py": "dedup",
           "input_prep/make_folds.py": "make_folds", "input_prep/make_demo.py": "make_demo", "run_all.sh": "run_all"}


def build_parser(script: str) -> argparse.ArgumentParser:
    """The parser of one script of SCRIPTS (the manual's flag reference is rendered from these)."""
    if script not in SCRIPTS:
        raise KeyError(f"{script!r}: not a script; scripts: {', '.join(SCRIPTS)}")
    return importlib.import_module(f"hpa.cli.{SCRIPTS[script]}").build_parser()


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown once, by argparse, and only where there is one (not None, not a switch's False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, [], argparse.SUPPRESS) or "[" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse with defaults in --help and usage errors as one line with exit code 1. `doc` is the
    command module's docstring: its first paragraph describes, the rest is the epilog."""

    def __init__(self, doc: str, prog: str, **kw):
        head, _, rest = doc.partition("\n\n")
        super().__init__(prog=prog, description=head, epilog=rest, formatter_class=_Formatter, **kw)

    def error(self, message: str):
        raise SystemExit(_fail(f"{self.prog}: {message} (see --help)"))


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


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Call `main(argv)` (an int it returns is the exit code: some files failed, each listed); the
    toolkit's errors, OS errors (a full disk, a permission) and Ctrl-C end the process with one line
    on stderr."""
    try:
        rc = main(argv)
    except Stopped as e:
        print(f"stopped: {one_line(e)}", file=sys.stderr, flush=True)
        sys.exit(1)
    except (HPAError, OSError) as e:
        sys.exit(_fail(one_line(e)))
    except KeyboardInterrupt:
        _fail("interrupted")
        sys.exit(130)
    if rc:
        sys.exit(rc)
