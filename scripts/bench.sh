#!/usr/bin/env bash
# Side-by-side benchmarks of gotorch-train against eager PyTorch (Debian's
# python3-torch at /usr/bin/python3, the same libtorch), in one invocation,
# interleaved run by run: per-op overhead, the 128-512-512-128 MLP training
# loop (batch 64), the Cell_Unet training step (batch 128: the fused step,
# gotorch-train's autograd path, the reference) and the GEMM-only floor of
# each side, the autoencoder training step (2,000 genes, batch 128) and its
# floor, at 1 and 2 threads; then the memory monitor's cost per step and per
# cleanup. Three environments:
#   matched  both processes get the same OPENBLAS_CORETYPE (the kernels this
#            CPU supports) and the same glibc malloc thresholds: like for like;
#   haswell  as matched, with both forced to OpenBLAS's AVX2 Haswell kernels
#            (the training benchmarks only);
#   default  nothing set but the thread count: PyTorch runs as installed,
#            gotorch-train as shipped (it picks the OpenBLAS kernels and the
#            OpenMP wait policy and tunes malloc itself).
# scripts/bench-defaults.sh measures the binary with an empty environment.
# Raw results go to bench-results.jsonl; BENCHMARKS.md gets the tables with
# this command, the machine and the versions.
#
#   scripts/bench.sh     # REPS=3 THREADS="1 2" STEPS=200 AE_STEPS=40 MODES="matched haswell default"
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
THREADS=${THREADS:-1 2}
STEPS=${STEPS:-200}
MLP_STEPS=${MLP_STEPS:-300}
AE_STEPS=${AE_STEPS:-40}
MODES=${MODES:-matched haswell default}
PY=${REF_PYTHON:-/usr/bin/python3}
OUT=${BENCH_OUT:-bench-results.jsonl}

go build -o bin/gotorch-bench ./cmd/gotorch-bench
core=$(GOTORCH_NO_BLAS_REEXEC=1 ./bin/gotorch-bench blas-advice)
: > "$OUT"
run() { # mode threads command...
  local mode=$1 t=$2; shift 2
  if [ "$mode" = matched ] || [ "$mode" = haswell ]; then
    local kern=${core:-}
    [ "$mode" = haswell ] && kern=Haswell
    env BENCH_MODE="$mode" OPENBLAS_CORETYPE="$kern" MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=536870912 \
      OMP_NUM_THREADS="$t" OPENBLAS_NUM_THREADS="$t" MKL_NUM_THREADS="$t" OMP_WAIT_POLICY=PASSIVE "$@" >> "$OUT"
  else
    env -u OPENBLAS_CORETYPE -u MALLOC_MMAP_THRESHOLD_ -u MALLOC_TRIM_THRESHOLD_ -u OMP_WAIT_POLICY BENCH_MODE=default \
      OMP_NUM_THREADS="$t" OPENBLAS_NUM_THREADS="$t" MKL_NUM_THREADS="$t" "$@" >> "$OUT"
  fi
}
for mode in $MODES; do
  for t in $THREADS; do
    for rep in $(seq "$REPS"); do
      echo "$mode environment, $t thread(s), repetition $rep/$REPS" >&2
      if [ "$mode" != haswell ]; then
        run "$mode" "$t" ./bin/gotorch-bench ops -threads "$t"
        run "$mode" "$t" "$PY" scripts/bench/ref_bench.py ops --threads "$t"
        run "$mode" "$t" ./bin/gotorch-bench mlp -threads "$t" -steps "$MLP_STEPS"
        run "$mode" "$t" ./bin/gotorch-bench mlp-fused -threads "$t" -steps "$MLP_STEPS"
        run "$mode" "$t" "$PY" scripts/bench/ref_bench.py mlp --threads "$t" --steps "$MLP_STEPS"
      fi
      run "$mode" "$t" ./bin/gotorch-bench step -threads "$t" -steps "$STEPS"
      run "$mode" "$t" "$PY" scripts/bench/ref_bench.py step --threads "$t" --steps "$STEPS"
      run "$mode" "$t" ./bin/gotorch-bench step -impl generic -threads "$t" -steps "$STEPS"
      run "$mode" "$t" ./bin/gotorch-bench gemm -threads "$t" -steps "$STEPS"
      run "$mode" "$t" "$PY" scripts/bench/ref_bench.py gemm --threads "$t" --steps "$STEPS"
      run "$mode" "$t" ./bin/gotorch-bench ae -threads "$t" -steps "$AE_STEPS" -warmup 5
      run "$mode" "$t" "$PY" scripts/bench/ref_bench.py ae --threads "$t" --steps "$AE_STEPS" --warmup 5
      run "$mode" "$t" ./bin/gotorch-bench ae -impl generic -threads "$t" -steps "$AE_STEPS" -warmup 5
      run "$mode" "$t" ./bin/gotorch-bench ae-gemm -threads "$t" -steps "$AE_STEPS" -warmup 5
    done
  done
done
echo "memory monitor cost" >&2
go test -run '^$' -bench 'LogMemoryUsage|CleanupMemory' -benchtime 2000x ./monitor/ | \
  "$PY" scripts/bench/report.py --gobench >> "$OUT"
"$PY" scripts/bench/report.py "$OUT" "$(printf 'REPS=%s THREADS="%s" STEPS=%s MLP_STEPS=%s AE_STEPS=%s MODES="%s" scripts/bench.sh  (make bench)' \
  "$REPS" "$THREADS" "$STEPS" "$MLP_STEPS" "$AE_STEPS" "$MODES")" "$core" > BENCHMARKS.md
cat BENCHMARKS.md
