from hpa import cli
from hpa.training.engine import main

cli.run(main)
