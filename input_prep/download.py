"""Download the Kaggle files, full-size originals and HPAv18 external images: `python input_prep/download.py --help`.

The command line lives in hpa/cli/download.py (its parser, one hpa.api call, what it prints).
"""

from hpa.cli import run
from hpa.cli.download import main

if __name__ == "__main__":
    run(main)
