"""Train one fold of one arch: `python train_fold.py --help`.

The command line lives in hpa/cli/train_fold.py (its parser, one hpa.api call, what it prints).
"""

from hpa.cli import run
from hpa.cli.train_fold import main

if __name__ == "__main__":
    run(main)
