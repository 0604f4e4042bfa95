"""Run a whole recipe: data -> prepare -> duplicates -> folds -> train every member and fold -> TTA
predictions -> blend -> submission.

    bash run_all.sh                                   # the synthetic demo, on CPU, in minutes
    bash run_all.sh --data-dir data/hpa               # the paper recipe on real data (Kaggle layout)
    bash run_all.sh --data-dir data/hpa --plan        # how long it would take here; trains nothing

With no data directory, generates the synthetic demo (data/demo) and runs the `demo` recipe,
ending with the demo's test macro F1. With --data-dir (or DATA_DIR=...) it runs the `paper` recipe
(configs/recipes/paper.yaml: the paper's backbones at two sizes, 5 folds, on Kaggle train + HPAv18
external when external.csv exists) on data in the Kaggle layout (train.csv, train/, test/,
sample_submission.csv). Re-running resumes; SIGTERM or Ctrl-C stops training at the next step
with last.pt saved there. With --launcher slurm every stage is submitted as SLURM batch jobs
(a training job saves and requeues itself 2 minutes before its --time).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from hpa import api
from hpa.cli import Parser, options
from hpa.data import layout
from hpa.pipeline.recipe import RecipeRequest
from hpa.pipeline.slurm import STAGES, SlurmOptions


def build_parser() -> Parser:
    ap = Parser(__doc__, "run_all.sh")
    env = os.environ.get("DATA_DIR")
    options.data_dir(ap, required=False, help="dataset directory (Kaggle layout) [$DATA_DIR; without it, the "
                     "generated demo]")
    ap.set_defaults(data_dir=Path(env) if env else None)
    ap.add_argument("--recipe", help="configs/recipes/NAME.yaml or a YAML path [demo without data, paper with]")
    options.out_dir(ap, "where runs/, predictions/ and submission.csv go [work/<data dir name>]")
    options.n_folds(ap, "the recipe's number of folds, overridden")
    options.device(ap)
    ap.add_argument("--gpus", type=options.positive_int, help="use at most N GPUs [all visible]; with N > 1 each "
                    "fold trains with torchrun (DDP)")
    ap.add_argument("--parallel-folds", action="store_true", help="with several GPUs: one fold per GPU at once "
                    "instead of DDP per fold")
    ap.add_argument("--smoke", action="store_true", help="every member at 1/12 of its size, 1 epoch of 2 batches: "
                    "a CPU check of a recipe")
    ap.add_argument("--plan", action="store_true", help="train nothing: time each member on the devices here and "
                    "project the recipe's wall time (plan.md). With --launcher slurm: the jobs it would submit")
    slurm = ap.add_argument_group("SLURM (--launcher slurm)")
    slurm.add_argument("--launcher", choices=("local", "slurm"), default="local",
                       help="run here, or submit every stage as SLURM batch jobs and return")
    slurm.add_argument("--wait", action="store_true", help="wait for the jobs and end with the submission")
    slurm.add_argument("--partition", help="partition")
    slurm.add_argument("--account", help="account")
    slurm.add_argument("--gpus-per-job", type=options.non_negative_int, default=0, help="GPUs per training and "
                       "prediction job (more than 1: DDP inside the job)")
    slurm.add_argument("--cpus-per-job", type=options.positive_int, default=4, help="CPUs per job")
    slurm.add_argument("--time", help="a training job's time limit, e.g. 2-00:00:00; it saves and requeues itself "
                       "2 minutes before")
    slurm.add_argument("--mem", help="memory per job, e.g. 64G")
    slurm.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                       help="one more sbatch option for every job, e.g. --sbatch=--qos=long (repeatable)")
    demo = ap.add_argument_group("demo (no --data-dir)")
    demo.add_argument("--n-train", type=options.positive_int, default=2000, help="train samples")
    demo.add_argument("--n-test", type=options.positive_int, default=500, help="test samples")
    ap.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # one SLURM job's work
    ap.add_argument("--member", help=argparse.SUPPRESS)
    ap.add_argument("--fold", type=options.non_negative_int, help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")  # e.g. where the weights came from
    a = build_parser().parse_args(argv)
    slurm = SlurmOptions(a.partition, a.account, a.gpus_per_job, a.cpus_per_job, a.time, a.mem, a.sbatch) \
        if a.launcher == "slurm" else None
    r = api.run_recipe(RecipeRequest(a.recipe, a.data_dir, a.out_dir, a.n_folds, a.device, a.smoke, a.gpus,
                                     a.parallel_folds, a.plan, slurm, a.wait, (a.n_train, a.n_test), a.stage,
                                     a.member, a.fold))
    if a.stage or (slurm and not r.submission):
        return
    print(f"== done in {r.seconds:.0f} s")
    for what, path in r.files().items():
        print(f"{what}: {path}")
    if not a.plan:
        print(f"training curves: tensorboard --logdir {layout.recipe_runs(r.out_dir)}")


if __name__ == "__main__":
    from hpa.cli import run

    run(main)
