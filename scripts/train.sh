#!/usr/bin/env bash
# The user's guide entry point (chmod +x scripts/train.sh; ./scripts/train.sh):
# autoencoder → encode → Cell_Unet diffusion training, with memory monitoring,
# periodic cleanup and the out-of-memory report on by default.
#
# Defaults finish on 2 CPU cores in a few minutes on the bundled PBMC data
# (4,271 cells × 2,000 genes, 8 cell types). Override with environment
# variables; the reference's real-run values are in brackets:
#   DATA        input .h5ad of raw counts      [the Open Problems h5ad]
#   LABEL_KEY   obs column with the labels     [cell_type for Open Problems]
#   OUT         output directory               [output]
#   AE_STEPS    autoencoder steps              [200000; the paper uses step 150000]
#   DIFF_STEPS  diffusion updates              [800000]
#   SAVE_INTERVAL checkpoint every N updates   [200000]
#   LOG_INTERVAL  progress/memory line every N [100 / 1000]
#   DEVICE      cpu or cuda[:N]                [cuda]
#   BATCH_SIZE, MICROBATCH, EXTRA_TRAIN_FLAGS (e.g. "--auto_config --use_fp16")
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../shared/data/format_fixtures/anndata_0.8_written/pbmc4k_top2000_counts_csr_gzip.h5ad}
LABEL_KEY=${LABEL_KEY:-celltype}
OUT=${OUT:-output}
NAME=${NAME:-pbmc4k}
AE_STEPS=${AE_STEPS:-300}
DIFF_STEPS=${DIFF_STEPS:-1000}
SAVE_INTERVAL=${SAVE_INTERVAL:-500}
LOG_INTERVAL=${LOG_INTERVAL:-100}
DEVICE=${DEVICE:-cpu}
BATCH_SIZE=${BATCH_SIZE:-128}
MICROBATCH=${MICROBATCH:--1}
# Thread and BLAS settings: gotorch-train chooses them itself (its first
# output line says what); export OMP_WAIT_POLICY, OPENBLAS_CORETYPE or
# OMP_NUM_THREADS to override.

BIN=${BIN:-bin/gotorch-train}
if [ ! -x "$BIN" ] || [ -n "$(find cgotorch cellunet cmd monitor nn -newer "$BIN" -name '*.go' -print -quit 2>/dev/null)" ]; then
  make -s build
fi
[ -f "$DATA" ] || { echo "train.sh: data file $DATA not found (set DATA=...)"; exit 3; }

AE_DIR=$OUT/ae_checkpoint/$NAME
AE=$AE_DIR/model_seed=0_step=$((AE_STEPS - 1)).pt
LATENTS=$OUT/latents/$NAME.npz

echo "== 1/3 autoencoder: $AE_STEPS steps"
"$BIN" train-ae --data_dir "$DATA" --label_key "$LABEL_KEY" --save_dir "$AE_DIR" \
  --max_steps "$AE_STEPS" --checkpoint_freq "$AE_STEPS" --log_interval $((AE_STEPS < 100 ? AE_STEPS : 100)) \
  --device "$DEVICE"

echo "== 2/3 encode: $DATA → $LATENTS"
"$BIN" encode --data_dir "$DATA" --label_key "$LABEL_KEY" --vae_path "$AE" --output "$LATENTS" --device "$DEVICE"

echo "== 3/3 diffusion backbone: $DIFF_STEPS updates, memory line every $LOG_INTERVAL steps"
# shellcheck disable=SC2086
"$BIN" train --latents "$LATENTS" --save_dir "$OUT/checkpoint" --model_name "$NAME" \
  --batch_size "$BATCH_SIZE" --microbatch "$MICROBATCH" --lr 1e-4 --weight_decay 1e-4 \
  --lr_anneal_steps "$DIFF_STEPS" --ema_rate 0.9999 --log_interval "$LOG_INTERVAL" \
  --save_interval "$SAVE_INTERVAL" --mem_log_interval "$LOG_INTERVAL" --cleanup_interval 1000 \
  --device "$DEVICE" ${EXTRA_TRAIN_FLAGS:-}

echo "== done: checkpoints in $OUT/checkpoint/$NAME, memory log memory.jsonl and plot memory.svg there"
