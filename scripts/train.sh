#!/usr/bin/env bash
# The user's guide entry point (chmod +x scripts/train.sh; ./scripts/train.sh),
# the whole scDiffusion pipeline: autoencoder → encode → Cell_Unet diffusion
# backbone → noisy-latent classifier → sampling (unconditional, and every
# label guided by the classifier) → eval of the generated cells against the
# real ones. Memory monitoring, periodic cleanup and the out-of-memory report
# are on by default in every stage.
#
# Defaults finish on 2 CPU cores in a few minutes on the bundled PBMC data
# (4,271 cells × 2,000 genes, 8 cell types). Override with environment
# variables; the reference's real-run values are in brackets (BENCHMARKS-quality.md:
# the budget that meets the quality targets, scripts/bench-quality.sh):
#   DATA        input .h5ad of raw counts      [the Open Problems h5ad]
#   LABEL_KEY   obs column with the labels     [cell_type for Open Problems]
#   OUT         output directory               [output]
#   AE_STEPS    autoencoder steps              [200000; the paper uses step 150000]
#   DIFF_STEPS  diffusion updates              [800000]
#   SAVE_INTERVAL checkpoint every N updates   [200000]
#   LOG_INTERVAL  progress/memory line every N [100 / 1000]
#   DEVICE      cpu or cuda[:N]                [cuda]
#   BATCH_SIZE, MICROBATCH, EXTRA_TRAIN_FLAGS (e.g. "--auto_config --use_fp16")
#   CLS_STEPS   classifier steps               [500000 (classifier_train.py)]
#   NUM_SAMPLES unconditional cells            [12000 (cell_sample.py)]
#   CLASS_SAMPLES cells per label, guided      [as many as wanted]
#   RESPACING   sampling steps: ddimK (DDIM, K steps) or empty for all
#               diffusion steps (ancestral, as the reference)  [empty]
#   CLASSIFIER_SCALE guidance scale            [the reference's 2 by default]
#   STAGES      which stages run               [all: ae encode train classifier sample eval]
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
CLS_STEPS=${CLS_STEPS:-300}
NUM_SAMPLES=${NUM_SAMPLES:-1000}
CLASS_SAMPLES=${CLASS_SAMPLES:-200}
RESPACING=${RESPACING-ddim50}
CLASSIFIER_SCALE=${CLASSIFIER_SCALE:-2}
STAGES=${STAGES:-ae encode train classifier sample eval}
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
BACKBONE=$OUT/checkpoint/$NAME/model$(printf %06d "$DIFF_STEPS").pt
CLS_DIR=$OUT/classifier_checkpoint/$NAME
CLASSIFIER=$CLS_DIR/model$(printf %06d $((CLS_STEPS - 1))).pt
GEN=$OUT/simulated_samples/$NAME
EVAL=$OUT/eval
SAMPLER=()
[ -n "$RESPACING" ] && SAMPLER=(--use_ddim True --timestep_respacing "$RESPACING")
want() { [[ " $STAGES " == *" $1 "* ]]; }

if want ae; then
  echo "== 1/6 autoencoder: $AE_STEPS steps"
  "$BIN" train-ae --data_dir "$DATA" --label_key "$LABEL_KEY" --save_dir "$AE_DIR" \
    --max_steps "$AE_STEPS" --checkpoint_freq "$AE_STEPS" --log_interval $((AE_STEPS < 100 ? AE_STEPS : 100)) \
    --device "$DEVICE"
fi

if want encode; then
  echo "== 2/6 encode: $DATA → $LATENTS"
  "$BIN" encode --data_dir "$DATA" --label_key "$LABEL_KEY" --vae_path "$AE" --output "$LATENTS" --device "$DEVICE"
fi

if want train; then
  echo "== 3/6 diffusion backbone: $DIFF_STEPS updates, memory line every $LOG_INTERVAL steps"
  # shellcheck disable=SC2086
  "$BIN" train --latents "$LATENTS" --save_dir "$OUT/checkpoint" --model_name "$NAME" \
    --batch_size "$BATCH_SIZE" --microbatch "$MICROBATCH" --lr 1e-4 --weight_decay 1e-4 \
    --lr_anneal_steps "$DIFF_STEPS" --ema_rate 0.9999 --log_interval "$LOG_INTERVAL" \
    --save_interval "$SAVE_INTERVAL" --mem_log_interval "$LOG_INTERVAL" --cleanup_interval 1000 \
    --device "$DEVICE" ${EXTRA_TRAIN_FLAGS:-}
fi

if want classifier; then
  echo "== 4/6 classifier on noised latents (t < 500): $CLS_STEPS steps"
  "$BIN" train-classifier --latents "$LATENTS" --model_path "$CLS_DIR" --iterations "$CLS_STEPS" \
    --save_interval "$CLS_STEPS" --log_interval $((CLS_STEPS < 100 ? CLS_STEPS : 100)) \
    --mem_log_interval "$LOG_INTERVAL" --device "$DEVICE"
fi

# Each label's cells are decoded with BatchNorm statistics over them and the
# real cells' latents (--bn_ref): statistics of one label alone would
# normalise away what sets the label apart. Short runs sample the raw weights (--use_ema False, as the reference's
# cell_sample.py): an EMA of rate 0.9999 needs far more than 10,000 updates.
if want sample; then
  echo "== 5/6 sample: $NUM_SAMPLES cells unconditionally, $CLASS_SAMPLES of every label guided (${RESPACING:-ancestral, all steps})"
  "$BIN" sample --model_path "$BACKBONE" --use_ema False "${SAMPLER[@]}" \
    --num_samples "$NUM_SAMPLES" --batch_size "$NUM_SAMPLES" --sample_dir "$GEN" --vae_path "$AE" \
    --mem_log_interval 0 --device "$DEVICE"
  "$BIN" sample --model_path "$BACKBONE" --use_ema False "${SAMPLER[@]}" \
    --classifier_path "$CLASSIFIER" --cell_type all --classifier_scale "$CLASSIFIER_SCALE" \
    --num_samples "$CLASS_SAMPLES" --batch_size "$CLASS_SAMPLES" --sample_dir "${GEN}_class" --vae_path "$AE" --bn_ref "$LATENTS" --label_key "$LABEL_KEY" \
    --mem_log_interval 0 --device "$DEVICE"
fi

if want eval; then
  echo "== 6/6 eval: generated cells against the real ones"
  mkdir -p "$EVAL"
  "$BIN" eval --real "$DATA" --label_key "$LABEL_KEY" --generated "$GEN.h5ad" --output "$EVAL/$NAME.json"
  classes=()
  for f in "${GEN}_class"[0-9]*.h5ad; do classes+=(--generated "$f"); done
  "$BIN" eval --real "$DATA" --label_key "$LABEL_KEY" "${classes[@]}" --output "$EVAL/${NAME}_class.json"
fi

echo "== done: backbone $OUT/checkpoint/$NAME, classifier $CLS_DIR, cells ${GEN}*.h5ad, metrics and pictures in $EVAL"
