#!/usr/bin/env bash
# The README's test command, `make test`, once per OpenBLAS kernel family
# this CPU can execute — Prescott (SSE3) and Haswell (AVX2) always,
# Cooperlake or SkylakeX (AVX-512) when /proc/cpuinfo shows them — and the
# optimizer, determinism and exact-resume tests at 1 and 2 intra-op threads
# (GOTORCH_TEST_THREADS, read by cgotorchtest.Main). OpenBLAS reads
# OPENBLAS_CORETYPE when it loads, so each run is a fresh `make test`; the
# kernels OpenBLAS actually used are checked with `gotorch-train info`.
# Prints a summary of every run; exits 1 if any run failed.
#
#   scripts/test-matrix.sh                       # as CI (.ci/run) runs it
#   CORES="Haswell" THREADS="2" scripts/test-matrix.sh
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export GOTORCH_TESTDATA_DIR=${GOTORCH_TESTDATA_DIR:-$(realpath ../shared/data)}
THREADS=${THREADS:-1 2}
# Tests whose results depend on the thread count if anything does: AdamW
# (libtorch's and the fused one), generators, flat buffers, training
# trajectories, determinism, exact resume, microbatching, OOM retry,
# monitoring neutrality, the sampling loops and the initialisation checks
# (float64 sums whose order follows the thread count).
THREAD_TESTS='AdamW|ZeroGrad|Generator|Flatten|MLPTraining|Deterministic|Resum|Microbatch|OOMRetry|TrainStep|DoNotChangeTraining|EndToEnd|Live|Architecture|InitMatches'
THREAD_PKGS="./cgotorch/ ./nn/ ./cellunet/... ./monitor/"

flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
has() { for f in "$@"; do [[ $flags == *" $f "* ]] || return 1; done; }
summary=()
fail=0
if [ -z "${CORES:-}" ]; then
  CORES=Prescott
  if has avx2 fma; then
    CORES="$CORES Haswell"
  else
    summary+=("FAIL  this CPU lacks AVX2/FMA: the Haswell kernels cannot run here")
    fail=1
  fi
  if has avx512f avx512vl avx512bw avx512dq avx512_bf16; then
    CORES="$CORES Cooperlake"
  elif has avx512f avx512vl avx512bw avx512dq; then
    CORES="$CORES SkylakeX"
  fi
fi

make -s build >/dev/null || { echo "test-matrix: make build failed"; exit 1; }
run() { # label command...
  local label=$1 start rc
  shift
  echo
  echo "== $label"
  start=$(date +%s)
  "$@"
  rc=$?
  local took=$(($(date +%s) - start))
  if [ $rc -eq 0 ]; then summary+=("ok    $label  (${took} s)"); else summary+=("FAIL  $label  (exit $rc, ${took} s)"); fail=1; fi
}

for core in $CORES; do
  used=$(OPENBLAS_CORETYPE=$core bin/gotorch-train info 2>/dev/null | sed -n 's/^OpenBLAS kernels: \([A-Za-z0-9]*\).*/\1/p')
  if [ "${used,,}" != "${core,,}" ]; then
    summary+=("FAIL  OPENBLAS_CORETYPE=$core: OpenBLAS reports '${used:-nothing}' kernels")
    fail=1
    continue
  fi
  run "make test, OPENBLAS_CORETYPE=$core (OpenBLAS: $used kernels), 1 thread" env OPENBLAS_CORETYPE="$core" make test
done
for t in $THREADS; do
  # shellcheck disable=SC2086
  run "optimizer, determinism and exact-resume tests, GOTORCH_TEST_THREADS=$t" \
    env GOTORCH_TEST_THREADS="$t" go test -count=1 -timeout 20m -run "$THREAD_TESTS" $THREAD_PKGS
done

echo
echo "== test matrix ($(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores)"
printf '  %s\n' "${summary[@]}"
exit $fail
