"""Predict with TTA: OOF and test files per fold, or a folder of images: `python predict_tta.py --help`.

The command line lives in hpa/cli/predict_tta.py (its parser, one hpa.api call, what it prints).
"""

from hpa.cli import run
from hpa.cli.predict_tta import main

if __name__ == "__main__":
    run(main)
