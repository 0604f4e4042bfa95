#!/usr/bin/env bash
# Runs the whole pipeline: data -> prepare -> dedup -> folds -> train every fold of every arch
# -> TTA predictions -> thresholds + blend -> submission. See `bash run_all.sh --help`.
set -euo pipefail
cd "$(dirname "$0")"

usage() {
    cat <<'EOF'
Usage: bash run_all.sh [options]

With no data directory, generates the synthetic demo (data/demo) and runs every stage on CPU
in a few minutes, ending with the demo's test macro F1. With --data-dir (or DATA_DIR=...) it
runs the same stages on real Kaggle-layout data (train.csv, train/, test/, sample_submission.csv).

Options (defaults in brackets; the demo's first):
  --data-dir DIR     dataset directory [$DATA_DIR, else data/demo]
  --archs "A B"      archs to train, from: python -c 'import models; print(models.list_archs())'
                     [tiny_cnn | se_resnext50]
  --size N           prepared image size [128 | 768]
  --n-folds K        number of folds, all trained [2 | 5]
  --epochs N         epochs per fold [the arch config's: 24 for tiny_cnn]
  --sizes "N M"      TTA inference sizes [--size]
  --tta N            dihedral TTA transforms, 1..8 [8]
  --device D         auto | cpu | cuda [auto]
  --pretrained P     local encoder weights passed to train_fold.py [none]
  --out-dir DIR      where runs/, predictions/ and submission.csv go [work/<data dir name>]
  --n-train N        demo only: train samples [2000]
  --n-test N         demo only: test samples [500]
  -h, --help         this text
EOF
}

DATA="${DATA_DIR:-}"; ARCHS=""; SIZE=""; FOLDS=""; EPOCHS=""; SIZES=""; TTA=8; DEVICE=auto
PRETRAINED=""; WORK=""; N_TRAIN=2000; N_TEST=500
while [ $# -gt 0 ]; do
    case "$1" in
        --data-dir) DATA="$2"; shift 2 ;;
        --archs) ARCHS="$2"; shift 2 ;;
        --size) SIZE="$2"; shift 2 ;;
        --n-folds) FOLDS="$2"; shift 2 ;;
        --epochs) EPOCHS="$2"; shift 2 ;;
        --sizes) SIZES="$2"; shift 2 ;;
        --tta) TTA="$2"; shift 2 ;;
        --device) DEVICE="$2"; shift 2 ;;
        --pretrained) PRETRAINED="$2"; shift 2 ;;
        --out-dir) WORK="$2"; shift 2 ;;
        --n-train) N_TRAIN="$2"; shift 2 ;;
        --n-test) N_TEST="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run_all.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

source ./setup_env.sh
start=$(date +%s)

if [ -z "$DATA" ]; then
    DEMO=1; DATA=data/demo
    ARCHS="${ARCHS:-tiny_cnn}"; SIZE="${SIZE:-128}"; FOLDS="${FOLDS:-2}"
    if [ ! -f "$DATA/train.csv" ]; then
        echo "== generating the demo dataset in $DATA"
        python input_prep/make_demo.py --out-dir "$DATA" --n-train "$N_TRAIN" --n-test "$N_TEST" --size "$SIZE" --seed 0
    fi
else
    DEMO=0
    ARCHS="${ARCHS:-se_resnext50}"; SIZE="${SIZE:-768}"; FOLDS="${FOLDS:-5}"
    for f in train.csv sample_submission.csv; do
        [ -f "$DATA/$f" ] || { echo "error: $DATA/$f not found (see data/README.md)" >&2; exit 1; }
    done
fi
WORK="${WORK:-work/$(basename "$DATA")}"
SIZES="${SIZES:-$SIZE}"
mkdir -p "$WORK"
echo "== data $DATA, archs [$ARCHS], size $SIZE, $FOLDS folds, outputs in $WORK"

echo "== prepare (resize once into prepared/$SIZE)"
python input_prep/prepare.py --data-dir "$DATA" --size "$SIZE" --workers 2

echo "== near-duplicate detection"
python input_prep/dedup.py --data-dir "$DATA" --out-dir "$DATA/dedup" --size "$SIZE"

echo "== multilabel stratified folds over duplicate groups"
python input_prep/make_folds.py --labels "$DATA/train.csv" --n-folds "$FOLDS" --seed 0 --out "$DATA/folds.csv" \
    --groups "$DATA/dedup/duplicate_groups.csv" | tail -n 2

for arch in $ARCHS; do
    for ((fold = 0; fold < FOLDS; fold++)); do
        echo "== train $arch fold $fold"
        args=(--arch "$arch" --fold "$fold" --size "$SIZE" --data-dir "$DATA" --runs "$WORK/runs"
              --device "$DEVICE" --resume)
        [ -n "$EPOCHS" ] && args+=(--epochs "$EPOCHS")
        [ -n "$PRETRAINED" ] && args+=(--pretrained "$PRETRAINED")
        python train_fold.py "${args[@]}"
    done
    echo "== predict $arch (OOF + test, TTA $TTA, sizes $SIZES)"
    # shellcheck disable=SC2086
    python predict_tta.py --arch "$arch" --size "$SIZE" --folds $(seq 0 $((FOLDS - 1))) --sizes $SIZES \
        --tta "$TTA" --data-dir "$DATA" --runs "$WORK/runs" --out-dir "$WORK/predictions" --device "$DEVICE"
done

echo "== thresholds + blend"
blend_args=(--oof "$WORK/predictions/*_oof.csv" --test "$WORK/predictions/*_test.csv" --data-dir "$DATA"
            --out "$WORK/submission.csv")
[ -f "$DATA/test_labels.csv" ] && blend_args+=(--test-labels "$DATA/test_labels.csv")
python blend.py "${blend_args[@]}"

echo "== done in $(( $(date +%s) - start )) s"
[ "$DEMO" = 1 ] && echo "demo data: $DATA (preview: $DATA/preview.png)"
echo "submission: $WORK/submission.csv"
echo "per-class report: $WORK/report.md ($WORK/report.png)"
