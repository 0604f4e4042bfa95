"""Generate the synthetic demo dataset in the Kaggle layout: `python input_prep/make_demo.py --help`.

The command line lives in hpa/cli/make_demo.py (its parser, one hpa.api call, what it prints).
"""

from hpa.cli import run
from hpa.cli.make_demo import main

if __name__ == "__main__":
    run(main)
