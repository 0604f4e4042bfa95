#!/usr/bin/env bash
# Runs a whole recipe: data -> prepare -> duplicates -> folds -> train every member and fold
# -> TTA predictions -> blend -> submission. See `bash run_all.sh --help`.
set -euo pipefail
caller="$PWD"  # relative paths on the command line are the caller's, not the repository's
cd "$(dirname "$0")"

usage() {
    cat <<'USAGE'
Usage: bash run_all.sh [options]

With no data directory, generates the synthetic demo (data/demo) and runs the `demo` recipe on CPU
in a few minutes, ending with the demo's test macro F1. With --data-dir (or DATA_DIR=...) it runs
the `paper` recipe (configs/recipes/paper.yaml: the paper's backbones at two sizes, 5 folds, on
Kaggle train + HPAv18 external when external.csv exists, ImageNet-pretrained) on real data in the
Kaggle layout (train.csv, train/, test/, sample_submission.csv). Re-running resumes.

Options:
  --data-dir DIR     dataset directory [$DATA_DIR, else the generated demo]
  --recipe NAME      configs/recipes/NAME.yaml or a YAML path [demo without data, paper with]
  --out-dir DIR      where runs/, predictions/ and submission.csv go [work/<data dir name>]
  --n-folds K        override the recipe's number of folds
  --device D         auto | cpu | cuda [auto]
  --gpus N           use at most N GPUs [all visible]; with N > 1 each fold trains with torchrun (DDP)
  --parallel-folds   with several GPUs: one fold per GPU at once instead of DDP per fold
  --smoke            every member at 1/12 of its size, 1 epoch of 2 batches: a CPU check of a recipe
  --plan             train nothing: time each member on the devices here and project the whole recipe's
                     wall time with DDP and with parallel folds (prints it, writes <out-dir>/plan.md)
  --launcher L       local (run here) or slurm (submit every stage as SLURM batch jobs and return) [local]
  --wait             slurm: wait for the jobs and end with the submission
  --partition P, --account A, --gpus-per-job N, --cpus-per-job N, --time T, --mem M, --sbatch OPTION
                     slurm: what the jobs ask for (--time: a training job's limit; it saves and requeues
                     itself 2 minutes before); --sbatch adds any sbatch option to every job (repeatable)
  --n-train N        demo only: train samples [2000]
  --n-test N         demo only: test samples [500]
  -h, --help         this text
USAGE
}

absolute() {  # a path as given, made absolute against the caller's directory
    case "$1" in /*) echo "$1" ;; *) echo "$caller/$1" ;; esac
}
DATA="${DATA_DIR:+$(absolute "$DATA_DIR")}"; RECIPE=""; WORK=""; EXTRA=(); N_TRAIN=2000; N_TEST=500
while [ $# -gt 0 ]; do
    case "$1" in
        --data-dir|--recipe|--out-dir|--n-folds|--device|--gpus|--n-train|--n-test|--launcher|--partition|--account|\
        --gpus-per-job|--cpus-per-job|--time|--mem|--sbatch)
            if [ $# -lt 2 ] || [ -z "$2" ] || { [ "$1" != --sbatch ] && [ "${2#--}" != "$2" ]; }; then
                echo "error: run_all.sh: $1 needs a value (see --help)" >&2; exit 1
            fi ;;
    esac
    case "$1" in
        --data-dir) DATA="$(absolute "$2")"; shift 2 ;;
        --recipe) case "$2" in *.yaml|*.yml) RECIPE="$(absolute "$2")" ;; *) RECIPE="$2" ;; esac; shift 2 ;;
        --out-dir) WORK="$(absolute "$2")"; shift 2 ;;
        --n-folds|--device|--gpus|--launcher|--partition|--account|--gpus-per-job|--cpus-per-job|--time|--mem)
            EXTRA+=("$1" "$2"); shift 2 ;;
        --sbatch) EXTRA+=("--sbatch=$2"); shift 2 ;;
        --parallel-folds|--smoke|--plan|--wait) EXTRA+=("$1"); shift ;;
        --n-train) N_TRAIN="$2"; shift 2 ;;
        --n-test) N_TEST="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: run_all.sh: unknown option $1 (see --help)" >&2; exit 1 ;;
    esac
done

source ./setup_env.sh
start=$(date +%s)

if [ -z "$DATA" ]; then
    DATA=data/demo; RECIPE="${RECIPE:-demo}"
    if [ ! -f "$DATA/train.csv" ]; then
        echo "== generating the demo dataset in $DATA"
        python input_prep/make_demo.py --out-dir "$DATA" --n-train "$N_TRAIN" --n-test "$N_TEST" --size 128 --seed 0
    fi
else
    RECIPE="${RECIPE:-paper}"
fi
WORK="${WORK:-work/$(basename "$DATA")}"
# The recipe runs as a child that this script waits for, so that a signal to the script (kill PID,
# Ctrl-C, a closed terminal) reaches it: SIGTERM stops training at the next step with last.pt saved
# there, and the same command resumes. (Ctrl-C becomes SIGTERM: a background child ignores SIGINT.)
python -m hpa.pipeline.recipe --recipe "$RECIPE" --data-dir "$DATA" --out-dir "$WORK" ${EXTRA[@]+"${EXTRA[@]}"} &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || true' TERM INT HUP
rc=0
while :; do
    wait "$child" && rc=0 || rc=$?
    kill -0 "$child" 2>/dev/null || break  # a trapped signal ends `wait` early: wait until the recipe has stopped
done
trap - TERM INT HUP
[ "$rc" -eq 0 ] || exit "$rc"
case " ${EXTRA[*]-} " in *" --plan "*) exit 0 ;; esac
[ -f "$WORK/report.md" ] || exit 0  # SLURM jobs still running: they write it

echo "== done in $(( $(date +%s) - start )) s"
[ "$DATA" = data/demo ] && echo "demo data: $DATA (preview: $DATA/preview.png)"
echo "per-class report: $WORK/report.md ($WORK/report.png)"
[ -f "$WORK/test_images/report.html" ] && echo "test images with class maps: $WORK/test_images/report.html"
echo "training curves: tensorboard --logdir $WORK/runs"
