"""Train one fold of one arch.

    python train_fold.py --arch se_resnext50 --fold 3 --size 768 --data-dir data/hpa

Settings: the defaults (--help lists them), then configs/<arch>.yaml, then --config FILE, then --set key=value,
then the flags named after the settings. The merged config is saved in the run directory,
runs/<arch>_<size>/f<fold>/, with log.csv, curves.png, last.pt and best.pt (by validation macro F1
at threshold 0.5). An existing run is continued with --resume or replaced with --overwrite, never
silently. Several GPUs: torchrun --nproc_per_node N train_fold.py ... (--batch-size is the effective batch of a step
over all GPUs; micro_batch: auto splits it into what fits each GPU).
"""

from __future__ import annotations

import functools

from hpa import cli
from hpa.training.engine import main

if __name__ == "__main__":
    cli.run(functools.partial(main, doc=__doc__))
