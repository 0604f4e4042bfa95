"""Per-class thresholds that maximise macro F1 on out-of-fold predictions: `python find_thresholds.py --help`.

The command line lives in hpa/cli/find_thresholds.py (its parser, one hpa.api call, what it prints).
"""

from hpa.cli import run
from hpa.cli.find_thresholds import main

if __name__ == "__main__":
    run(main)
