#!/usr/bin/env bash
# Quality of the generated cells (issue 13's targets): runs the whole
# pipeline, scripts/train.sh, with a training budget meant to fit in 30
# minutes on 2 CPU cores, on PBMC 4k and on pbmc68k, and writes the eval
# metrics, the stage times and the command to BENCHMARKS-quality.md.
#
#   scripts/bench-quality.sh                # both datasets
#   DATASETS=pbmc4k scripts/bench-quality.sh
#
# Targets: gene-mean Spearman ≥ 0.95; kNN real-vs-generated accuracy ≤ 0.65;
# the independent classifier's accuracy on guided cells ≥ 0.8× its accuracy
# on held-out real cells (overall and per label).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/usr/bin/python3}
OUT=${OUT:-output/bench-quality}
DATASETS=${DATASETS:-pbmc4k pbmc68k}
BUDGET=${BUDGET:-"AE_STEPS=3000 DIFF_STEPS=20000 SAVE_INTERVAL=20000 LOG_INTERVAL=1000 CLS_STEPS=3000"}
FIX=../shared/data/format_fixtures/anndata_0.8_written
rm -rf "$OUT" && mkdir -p "$OUT"
make -s build
for ds in $DATASETS; do
  case $ds in
  pbmc4k) set -- DATA=$FIX/pbmc4k_top2000_counts_csr_gzip.h5ad LABEL_KEY=celltype NUM_SAMPLES=3000 CLASS_SAMPLES=300 ;;
  pbmc68k) set -- DATA=$FIX/pbmc68k_counts_csr_gzip.h5ad LABEL_KEY=bulk_labels NUM_SAMPLES=700 CLASS_SAMPLES=100 ;;
  *) echo "bench-quality: unknown dataset $ds (pbmc4k or pbmc68k)"; exit 2 ;;
  esac
  cmd="$* NAME=$ds OUT=$OUT/$ds $BUDGET ./scripts/train.sh"
  echo "== $ds: $cmd"
  # shellcheck disable=SC2086
  env "$@" NAME="$ds" OUT="$OUT/$ds" $BUDGET ./scripts/train.sh > "$OUT/$ds.log" 2>&1 || { tail -40 "$OUT/$ds.log"; exit 1; }
  echo "$cmd" > "$OUT/$ds.cmd"
  uptime > "$OUT/$ds.load"
done
"$PY" scripts/bench/quality_report.py "$OUT" $DATASETS > BENCHMARKS-quality.md
cat BENCHMARKS-quality.md
