"""Export a recipe's ensemble as a shareable bundle (and a bioimage.io package): `python export_bundle.py --help`.

The command line lives in hpa/cli/export_bundle.py (its parser, one hpa.api call, what it prints).
"""

from hpa.cli import run
from hpa.cli.export_bundle import main

if __name__ == "__main__":
    run(main)
