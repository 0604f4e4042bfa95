"""Find near-duplicate samples across train, external and test: `python input_prep/dedup.py --help`.

The command line lives in hpa/cli/dedup.py (its parser, one hpa.api call, what it prints).
"""

from hpa.cli import run
from hpa.cli.dedup import main

if __name__ == "__main__":
    run(main)
