"""Which of the paper's tricks help on your data: `python ablate.py --help`.

The command line lives in hpa/cli/ablate.py (its parser, one hpa.api call, what it prints).
"""

from hpa.cli import run
from hpa.cli.ablate import main

if __name__ == "__main__":
    run(main)
