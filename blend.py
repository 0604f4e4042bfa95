"""Blend the models' predictions, fit thresholds, write a Kaggle submission: `python blend.py --help`.

The command line lives in hpa/cli/blend.py (its parser, one hpa.api call, what it prints).
"""

from hpa.cli import run
from hpa.cli.blend import main

if __name__ == "__main__":
    run(main)
