#!/usr/bin/env bash
# Side-by-side benchmarks of gotorch-train against eager PyTorch (Debian's
# python3-torch at /usr/bin/python3, the same libtorch), in one invocation,
# interleaved run by run: per-op overhead, the 128-512-512-128 MLP training
# loop (batch 64), the Cell_Unet training step (batch 128: the fused step,
# gotorch-train's autograd path, the reference) and the GEMM-only floor of
# each side, the autoencoder training step (2,000 genes, batch 128) and its
# floor, the ancestral sampling loop (batch SAMPLE_BATCH, SAMPLE_STEPS timed
# steps; fp32 and, on CPUs with AVX512-BF16 or AMX, bf16) and its
# matrix-product floors, at 1 and 2 threads; then the memory monitor's cost
# per step and per cleanup. Three environments:
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
#   scripts/bench.sh                 # REPS=3 THREADS="1 2" STEPS=200 AE_STEPS=40 MODES="matched haswell default"
#   BENCHES=sample scripts/bench.sh  # only sampling: replaces the sampling section of BENCHMARKS.md
#
# With SAMPLE_MODEL (a trained backbone modelNNNNNN.pt) and SAMPLE_VAE (its
# autoencoder) it also checks bf16 samples against fp32 ones of the same seed
# (scripts/bench/sample_quality.py).
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
BENCHES=${BENCHES:-step sample}
SAMPLE_BATCH=${SAMPLE_BATCH:-1500}
SAMPLE_STEPS=${SAMPLE_STEPS:-100}
has() { [[ " $BENCHES " == *" $1 "* ]]; }
bf16=""
if grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo; then bf16=1; fi

go build -o bin/gotorch-bench ./cmd/gotorch-bench
core=$(GOTORCH_NO_BLAS_REEXEC=1 ./bin/gotorch-bench blas-advice)
: > "$OUT"
loadavg() { # when: the load on the machine, recorded in the results
  local a b c _
  read -r a b c _ < /proc/loadavg
  printf '{"bench": "loadavg", "impl": "", "threads": 0, "mode": "", "when": "%s", "load1": %s, "load5": %s, "load15": %s}\n' "$1" "$a" "$b" "$c" >> "$OUT"
}
loadavg start
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
      if has step && [ "$mode" != haswell ]; then
        run "$mode" "$t" ./bin/gotorch-bench ops -threads "$t"
        run "$mode" "$t" "$PY" scripts/bench/ref_bench.py ops --threads "$t"
        run "$mode" "$t" ./bin/gotorch-bench mlp -threads "$t" -steps "$MLP_STEPS"
        run "$mode" "$t" ./bin/gotorch-bench mlp-fused -threads "$t" -steps "$MLP_STEPS"
        run "$mode" "$t" "$PY" scripts/bench/ref_bench.py mlp --threads "$t" --steps "$MLP_STEPS"
      fi
      if has step; then
        run "$mode" "$t" ./bin/gotorch-bench step -threads "$t" -steps "$STEPS"
        run "$mode" "$t" "$PY" scripts/bench/ref_bench.py step --threads "$t" --steps "$STEPS"
        run "$mode" "$t" ./bin/gotorch-bench step -impl generic -threads "$t" -steps "$STEPS"
        run "$mode" "$t" ./bin/gotorch-bench gemm -threads "$t" -steps "$STEPS"
        run "$mode" "$t" "$PY" scripts/bench/ref_bench.py gemm --threads "$t" --steps "$STEPS"
        run "$mode" "$t" ./bin/gotorch-bench ae -threads "$t" -steps "$AE_STEPS" -warmup 5
        run "$mode" "$t" "$PY" scripts/bench/ref_bench.py ae --threads "$t" --steps "$AE_STEPS" --warmup 5
        run "$mode" "$t" ./bin/gotorch-bench ae -impl generic -threads "$t" -steps "$AE_STEPS" -warmup 5
        run "$mode" "$t" ./bin/gotorch-bench ae-gemm -threads "$t" -steps "$AE_STEPS" -warmup 5
      fi
      if has sample && [ "$mode" != haswell ]; then
        sb=(-threads "$t" -batch "$SAMPLE_BATCH" -steps "$SAMPLE_STEPS")
        run "$mode" "$t" ./bin/gotorch-bench sample "${sb[@]}"
        run "$mode" "$t" "$PY" scripts/bench/sample_ref.py sample --threads "$t" --batch "$SAMPLE_BATCH" --steps "$SAMPLE_STEPS"
        run "$mode" "$t" ./bin/gotorch-bench sample-gemm "${sb[@]}" -forward shared
        run "$mode" "$t" ./bin/gotorch-bench sample-gemm "${sb[@]}" -forward full
        run "$mode" "$t" "$PY" scripts/bench/sample_ref.py gemm --threads "$t" --batch "$SAMPLE_BATCH" --steps "$SAMPLE_STEPS"
        if [ -n "$bf16" ]; then
          run "$mode" "$t" ./bin/gotorch-bench sample "${sb[@]}" -precision bf16
          run "$mode" "$t" ./bin/gotorch-bench sample-gemm "${sb[@]}" -forward shared -precision bf16
        fi
      fi
    done
  done
done
if has sample && [ -n "${SAMPLE_MODEL:-}" ] && [ -n "${SAMPLE_VAE:-}" ]; then
  echo "bf16 against fp32 samples of the same seed" >&2
  go build -o bin/gotorch-train ./cmd/gotorch-train
  q=$(mktemp -d)
  for p in fp32 bf16; do
    ./bin/gotorch-train sample --model_path "$SAMPLE_MODEL" --vae_path "$SAMPLE_VAE" --precision "$p" --seed 7 \
      --num_samples "${QUALITY_SAMPLES:-3000}" --batch_size "$SAMPLE_BATCH" --sample_dir "$q/$p" --mem_log_interval 0 >&2
  done
  "$PY" scripts/bench/sample_quality.py "$q/fp32" "$q/bf16" "$SAMPLE_MODEL" >> "$OUT"
  rm -rf "$q"
fi
if has step; then
  echo "memory monitor cost" >&2
  go test -run '^$' -bench 'LogMemoryUsage|CleanupMemory' -benchtime 2000x ./monitor/ | \
    "$PY" scripts/bench/report.py --gobench >> "$OUT"
fi
loadavg end
cmd=$(printf 'REPS=%s THREADS="%s" STEPS=%s MLP_STEPS=%s AE_STEPS=%s MODES="%s" BENCHES="%s" SAMPLE_BATCH=%s SAMPLE_STEPS=%s scripts/bench.sh  (make bench)' \
  "$REPS" "$THREADS" "$STEPS" "$MLP_STEPS" "$AE_STEPS" "$MODES" "$BENCHES" "$SAMPLE_BATCH" "$SAMPLE_STEPS")
if has step; then
  "$PY" scripts/bench/report.py "$OUT" "$cmd" "$core" > BENCHMARKS.md
else
  # Only the sampling section is new: splice it into BENCHMARKS.md.
  "$PY" scripts/bench/report.py "$OUT" "$cmd" "$core" --splice BENCHMARKS.md
fi
cat BENCHMARKS.md
