"""Embed a dataset or a folder of own images with a frozen encoder: `python embed.py --help`.

The command line lives in hpa/cli/embed.py (its parser, one hpa.api call, what it prints).
"""

from hpa.cli import run
from hpa.cli.embed import main

if __name__ == "__main__":
    run(main)
