"""Resize every sample once to the working size: `python input_prep/prepare.py --help`.

The command line lives in hpa/cli/prepare.py (its parser, one hpa.api call, what it prints).
"""

from hpa.cli import run
from hpa.cli.prepare import main

if __name__ == "__main__":
    run(main)
