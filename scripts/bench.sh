#!/usr/bin/env bash
# Side-by-side benchmarks of gotorch-train against eager PyTorch (Debian's
# python3-torch at /usr/bin/python3), in one invocation, interleaved:
#   per-op overhead, the 128-512-512-128 MLP training loop (batch 64),
#   the Cell_Unet training step (batch 128) and its GEMM-only floor,
# at 1 and 2 threads. Writes the raw results to bench-results.jsonl and the
# table (with this command, the machine and the versions) to BENCHMARKS.md.
#
#   scripts/bench.sh                 # REPS=3 THREADS="1 2" STEPS=200
#   REPS=5 STEPS=300 scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
THREADS=${THREADS:-1 2}
STEPS=${STEPS:-200}
MLP_STEPS=${MLP_STEPS:-200}
PY=${REF_PYTHON:-/usr/bin/python3}
OUT=${BENCH_OUT:-bench-results.jsonl}

go build -o bin/gotorch-bench ./cmd/gotorch-bench
: > "$OUT"
run() { # threads, command...
  local t=$1; shift
  OMP_NUM_THREADS=$t OPENBLAS_NUM_THREADS=$t MKL_NUM_THREADS=$t OMP_WAIT_POLICY=PASSIVE "$@" >> "$OUT"
}
for t in $THREADS; do
  for rep in $(seq "$REPS"); do
    echo "threads $t, repetition $rep/$REPS" >&2
    run "$t" ./bin/gotorch-bench ops -threads "$t"
    run "$t" "$PY" scripts/bench/ref_bench.py ops --threads "$t"
    run "$t" ./bin/gotorch-bench mlp -threads "$t" -steps "$MLP_STEPS"
    run "$t" "$PY" scripts/bench/ref_bench.py mlp --threads "$t" --steps "$MLP_STEPS"
    run "$t" ./bin/gotorch-bench step -threads "$t" -steps "$STEPS"
    run "$t" "$PY" scripts/bench/ref_bench.py step --threads "$t" --steps "$STEPS"
    run "$t" "$PY" scripts/bench/ref_bench.py gemm --threads "$t" --steps "$STEPS"
  done
done
"$PY" scripts/bench/report.py "$OUT" "REPS=$REPS THREADS=\"$THREADS\" STEPS=$STEPS MLP_STEPS=$MLP_STEPS scripts/bench.sh (make bench)" > BENCHMARKS.md
cat BENCHMARKS.md
