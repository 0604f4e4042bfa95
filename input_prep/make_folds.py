"""Multilabel stratified folds over the training samples: `python input_prep/make_folds.py --help`.

The command line lives in hpa/cli/make_folds.py (its parser, one hpa.api call, what it prints).
"""

from hpa.cli import run
from hpa.cli.make_folds import main

if __name__ == "__main__":
    run(main)
