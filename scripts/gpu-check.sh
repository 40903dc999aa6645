#!/usr/bin/env bash
# The CUDA check, in one run on a GPU machine (binding.md §10). That machine
# has a pip torch with CUDA but no Go, so the Go side is built here first:
#
#   make gpu-binaries     # bin/gpu/: the test binaries of the packages that run on
#                         # libtorch, gotorch-bench, gotorch-train, gotorch-synth (linked
#                         # only to -lcgotorch), the HDF5 libraries gotorch-train needs
#                         # and the test data; packed as bin/gpu-kit.tar.xz
#
# then, on the GPU machine, from the repository root with bin/gpu-kit.tar.xz
# (or bin/gpu) carried:
#
#   OUT=/path/for/results scripts/gpu-check.sh    # TORCH_PYTHON (default python3)
#
# It records the machine (GPU, driver, CUDA, torch, compiler); builds the
# CUDA flavour of libcgotorch.so against that torch (`make shim FLAVOR=cuda`,
# the Makefile's flavour logic) and checks with `probe_torch.py --check` that
# it links libtorch's own CUDA and OpenMP runtimes; runs every test binary
# against it with CGOTORCH_REQUIRE_CUDA=1 (a CUDA test that would skip
# fails) and lists which of issue 11's CUDA checks ran; benchmarks the
# Cell_Unet training step at batch 128 and 1,024 against the PyTorch eager
# step in the same run, and the encode of the Open Problems shape (69,249 ×
# 13,431) on the GPU. $OUT receives summary.txt, bench.jsonl and logs.tar.gz
# (the device tool brings back at most 8 files).
#
#   scripts/gpu-check.sh --rehearse
#
# runs the same steps on a machine without a GPU, against the CPU flavour:
# CUDA tests skip instead of failing, the benchmarks run on the CPU with few
# steps and a small encode, and the probe check is skipped (no CUDA torch).
# It tests this script, not CUDA.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
REHEARSE=0
[ "${1:-}" = --rehearse ] && REHEARSE=1
OUT=${OUT:-/tmp/gpu-check}
PY=${TORCH_PYTHON:-python3}
LOGS=$(mktemp -d /tmp/gpu-check-logs.XXXXXX)
WORK=${WORK:-/tmp/gpu-check-work}
mkdir -p "$OUT" "$WORK"
exec > >(tee "$LOGS/gpu_check.log") 2>&1
fail=0
note() { echo "$*" | tee -a "$LOGS/summary.txt"; }
# shellcheck disable=SC2317  # run by the EXIT trap
finish() {
  cp "$LOGS/summary.txt" "$OUT/summary.txt" 2>/dev/null
  [ -f "$LOGS/bench.jsonl" ] && cp "$LOGS/bench.jsonl" "$OUT/bench.jsonl"
  tar -C "$LOGS" -czf "$OUT/logs.tar.gz" . 2>/dev/null
  echo "== done (fail=$fail): $OUT/summary.txt, bench.jsonl, logs.tar.gz"
}
trap finish EXIT

if [ $REHEARSE = 1 ]; then
  FLAVOR=cpu DEV=cpu STEPS=${STEPS:-5} PY=${TORCH_PYTHON:-/usr/bin/python3}
  note "# gpu-check REHEARSAL without a GPU ($(date -u +%FT%TZ)): CPU flavour, CUDA tests skip, CPU benchmarks"
else
  FLAVOR=cuda DEV=cuda STEPS=${STEPS:-300}
  export CGOTORCH_REQUIRE_CUDA=1
  note "# gpu-check $(date -u +%FT%TZ)"
fi
SHIM_DIR=$PWD/cgotorch/build/$FLAVOR
[ -d bin/gpu ] || [ ! -f bin/gpu-kit.tar.xz ] || tar -C bin -xJf bin/gpu-kit.tar.xz
[ -d bin/gpu ] || { note "FAIL: bin/gpu missing: run make gpu-binaries on the Go machine and carry bin/gpu-kit.tar.xz"; fail=1; exit 1; }
# The carried HDF5 libraries this machine lacks, for gotorch-train and
# gotorch-synth only (never ahead of the system's own for anything else).
mkdir -p "$WORK/lib"
known=$(ldconfig -p)
for f in bin/gpu/lib/*; do
  [ -e "$f" ] || continue
  grep -q "^[[:space:]]*$(basename "$f") " <<<"$known" || ln -sf "$PWD/$f" "$WORK/lib/"
done
hdf5_run() { LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$WORK/lib "$@"; }
# Wall time and peak RSS of a command, without /usr/bin/time.
measure() {
  "$PY" -c 'import resource, subprocess, sys, time
t = time.time(); r = subprocess.call(sys.argv[1:])
print("measure: wall_s %.1f peak_rss_mib %.0f" % (time.time() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024), file=sys.stderr)
sys.exit(r)' "$@"
}

echo "== machine"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,pci.bus_id --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /'
  nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9.]*' | sed 's/^/driver /'
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "cxx11_abi", torch._C._GLIBCXX_USE_CXX11_ABI)'
  command -v nvcc >/dev/null && nvcc --version | tail -1 | sed 's/^/nvcc /'
  echo "$(g++ --version | head -1), $(nproc) cores"
} 2>&1 | tee -a "$LOGS/summary.txt"

echo "== libcgotorch.so, $FLAVOR flavour"
for tool in make g++ readelf; do
  command -v $tool >/dev/null || { note "FAIL: $tool not found (the shim build needs make, g++ and binutils)"; fail=1; exit 1; }
done
start=$(date +%s)
if [ $FLAVOR = cuda ]; then
  make -j"$(nproc)" shim FLAVOR=cuda TORCH_PYTHON="$PY" > "$LOGS/shim_build.log" 2>&1
else
  make -j"$(nproc)" shim > "$LOGS/shim_build.log" 2>&1
fi
rc=$?
warnings=$(grep -c 'warning:' "$LOGS/shim_build.log")
if [ $rc != 0 ]; then
  note "FAIL shim build ($FLAVOR), see shim_build.log:"; grep -m 20 -E 'error|undefined' "$LOGS/shim_build.log" | tee -a "$LOGS/summary.txt"
  fail=1; exit 1
fi
note "ok   shim build ($FLAVOR) in $(($(date +%s) - start)) s, $warnings compiler warnings"
[ $FLAVOR = cuda ] && grep -h '^# generated\|^OPENMP\|^TORCH_VERSION' "$SHIM_DIR/torch.mk" | tee -a "$LOGS/summary.txt"
if [ $FLAVOR = cuda ]; then
  if "$PY" scripts/probe_torch.py --check "$SHIM_DIR/libcgotorch.so" > "$LOGS/shim_check.log" 2>&1; then
    note "ok   shim links libtorch's own CUDA and OpenMP runtimes"
  else
    note "FAIL shim link check:"; tee -a "$LOGS/summary.txt" < "$LOGS/shim_check.log"; fail=1
  fi
else
  note "--   shim link check skipped (rehearsal: no CUDA torch)"
fi
ldd "$SHIM_DIR/libcgotorch.so" > "$LOGS/shim_ldd.txt" 2>&1
if grep -q 'not found' "$LOGS/shim_ldd.txt"; then
  note "FAIL shim has unresolved libraries:"; grep 'not found' "$LOGS/shim_ldd.txt" | tee -a "$LOGS/summary.txt"; fail=1
fi

# NVML: go-nvml dlopens libnvidia-ml.so.1; help it if ldconfig does not know it.
if [ $FLAVOR = cuda ] && ! grep -q 'libnvidia-ml.so.1' <<<"$known"; then
  nv=$(find /usr/local/nvidia /usr/lib /usr/lib64 /usr/local -name 'libnvidia-ml.so.1' 2>/dev/null | head -1)
  if [ -n "$nv" ]; then
    LD_LIBRARY_PATH=$(dirname "$nv"):${LD_LIBRARY_PATH:-}
    export LD_LIBRARY_PATH
  fi
fi
# The shim first: the binaries' RUNPATH names the build folder of the
# machine that linked them.
export LD_LIBRARY_PATH=$SHIM_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export OMP_WAIT_POLICY=PASSIVE GOTORCH_TESTDATA_DIR=${GOTORCH_TESTDATA_DIR:-$PWD/../shared/data}
[ -d "$GOTORCH_TESTDATA_DIR" ] || export GOTORCH_TESTDATA_DIR=$PWD/bin/gpu/data
# PyTorch for the tests that run it (torch.load checks, live references).
export GOTORCH_REF_PYTHON=${GOTORCH_REF_PYTHON:-$(command -v "$PY")}

echo "== tests${CGOTORCH_REQUIRE_CUDA:+ (CUDA required)}"
for t in bin/gpu/*.test; do
  name=$(basename "$t" .test)
  dir=${name//_//}
  bin=$PWD/$t
  start=$(date +%s)
  if (cd "$dir" && "$bin" -test.v -test.timeout 10m > "$LOGS/test_$name.log" 2>&1); then
    note "ok   $dir: $(grep -c '^--- PASS' "$LOGS/test_$name.log") passed, $(grep -c '^--- SKIP' "$LOGS/test_$name.log") skipped ($(($(date +%s) - start)) s)"
  else
    note "FAIL $dir ($(($(date +%s) - start)) s):"; grep -E '^(--- FAIL|panic|\s+\S+_test.go)' "$LOGS/test_$name.log" | head -20 | tee -a "$LOGS/summary.txt"; fail=1
  fi
done
# Issue 11's CUDA checks and the tests that make them (none: not tested yet).
echo "== issue 11's CUDA checks" | tee -a "$LOGS/summary.txt"
while IFS='|' read -r what tests; do
  [ -z "$what" ] && continue
  if [ -z "$tests" ]; then note "MISSING  $what: no test yet"; continue; fi
  res=""
  for tn in $tests; do
    if grep -qh "^--- PASS: $tn " "$LOGS"/test_*.log; then res="$res $tn:pass"
    elif grep -qh "^--- SKIP: $tn " "$LOGS"/test_*.log; then res="$res $tn:skip"
    elif grep -qh "^--- FAIL: $tn " "$LOGS"/test_*.log; then res="$res $tn:FAIL"
    else res="$res $tn:absent"; fi
  done
  note "$(case $res in *FAIL*|*absent*) echo "FAIL    ";; *skip*) echo "skipped ";; *) echo "ok      ";; esac) $what:$res"
done <<'EOF'
allocator statistics, EmptyCache, ResetPeakStats, a 4 TiB CUDA OOM survived|TestCUDAAllocatorStatsAndOOM
CUDA build, PCI bus id, cudaMemGetInfo|TestCUDABuildAndRoundTrip
a real CUDA OOM with the report and the step-exact retry|TestGuardRealCUDAOOM
NVML device and per-process memory|TestNVMLOnGPU
memory line and cleanup on CUDA|TestCUDASampleStepLineCleanup
CPU vs CUDA losses within 1e-4 relative (100 AdamW steps, live handles flat)|TestCUDATrainingMatchesCPU
live handles flat over 1,000 Cell_Unet steps on CUDA|
fp16 autocast with loss scaling on CUDA|
bf16 autocast on CUDA|
EOF

echo "== benchmarks on $DEV: the Cell_Unet training step, gotorch-train then the PyTorch eager step"
# The default step on CUDA is the fused step's ATen backend; -impl generic
# is the autograd path, for comparison (ops_per_step/kernels_per_step: the
# dispatcher's counts of each).
for b in 128 1024; do
  bin/gpu/gotorch-bench step -device "$DEV" -batch "$b" -steps "$STEPS" -threads 4 >> "$LOGS/bench.jsonl" 2>> "$LOGS/bench.err" \
    || { note "FAIL gotorch-bench step batch $b (bench.err)"; fail=1; }
  bin/gpu/gotorch-bench step -device "$DEV" -batch "$b" -steps "$STEPS" -threads 4 -impl generic >> "$LOGS/bench.jsonl" 2>> "$LOGS/bench.err" \
    || { note "FAIL gotorch-bench step -impl generic batch $b (bench.err)"; fail=1; }
  "$PY" scripts/bench/ref_bench.py step --device "$DEV" --batch "$b" --steps "$STEPS" --threads 4 >> "$LOGS/bench.jsonl" 2>> "$LOGS/bench.err" \
    || { note "FAIL ref_bench.py step batch $b (bench.err)"; fail=1; }
done
"$PY" - "$LOGS/bench.jsonl" <<'EOF' | tee -a "$LOGS/summary.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
for b in sorted({r.get("batch") for r in rows if r.get("bench") == "step"}):
    go = [r for r in rows if r.get("bench") == "step" and r.get("batch") == b and r.get("impl") == "go" and r.get("impl_step") != "generic"]
    ref = [r for r in rows if r.get("bench") == "step" and r.get("batch") == b and r.get("impl") == "pytorch"]
    if go and ref:
        g, p = go[-1]["steps_per_s"], ref[-1]["steps_per_s"]
        print("step batch %d on %s: gotorch-train %.1f steps/s, PyTorch eager %.1f steps/s: %.2fx (goal >= 3x)" % (b, go[-1].get("device", "?"), g, p, g / p))
EOF
note "not measured: the step captured in a CUDA graph (goal >= 10x eager): gotorch-bench has no CUDA-graph step yet"

echo "== encode on $DEV (gotorch-train encode; the reference's GPU peak is about 6.3 GB)"
H5AD=$WORK/openproblems_synth.h5ad
start=$(date +%s)
if [ $REHEARSE = 1 ]; then
  H5AD=$WORK/pbmc4k.h5ad; cp "$GOTORCH_TESTDATA_DIR/format_fixtures/anndata_0.8_written/pbmc4k_top2000_counts_csr_gzip.h5ad" "$H5AD"
elif [ ! -f "$H5AD" ]; then
  hdf5_run bin/gpu/gotorch-synth "$H5AD" > "$LOGS/synth.log" 2>&1 || { note "FAIL gotorch-synth (synth.log)"; fail=1; }
fi
AE=$WORK/ae/model_seed=0_step=0.pt
[ -f "$AE" ] || hdf5_run bin/gpu/gotorch-train train-ae --data_dir "$H5AD" --save_dir "$WORK/ae" --max_steps 1 --checkpoint_freq 1 \
  --log_interval 1 --mem_log_interval 0 --device "$DEV" > "$LOGS/train_ae.log" 2>&1 || { note "FAIL train-ae for the encode (train_ae.log)"; fail=1; }
poll=""
if [ $DEV = cuda ]; then
  base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 2>/dev/null | head -1)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 100 > "$LOGS/encode_nvsmi.txt" 2>/dev/null &
  poll=$!
fi
if measure env LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$WORK/lib" bin/gpu/gotorch-train encode --data_dir "$H5AD" --vae_path "$AE" \
     --output "$WORK/latents.npz" --device "$DEV" > "$LOGS/encode.log" 2>&1; then
  [ -n "$poll" ] && kill "$poll" 2>/dev/null
  rss=$(awk '/^measure:/ {print $5}' "$LOGS/encode.log")
  wall=$(awk '/^measure:/ {print $3 " s"}' "$LOGS/encode.log")
  gpu=""
  if [ -n "$poll" ] && [ -n "$base" ]; then
    peak=$(sort -n "$LOGS/encode_nvsmi.txt" | tail -1)
    gpu=", device memory used rose by at most $((peak - base)) MiB (nvidia-smi every 100 ms: CUDA context included), $(awk -v p=$((peak - base)) 'BEGIN {printf "%.1f", 100 * p / (6.3 * 1024)}') % of 6.3 GB (goal <= 10 %)"
  fi
  note "ok   encode $(basename "$H5AD") on $DEV in $wall, peak RSS $rss MiB$gpu ($(($(date +%s) - start)) s with setup)"
else
  [ -n "$poll" ] && kill "$poll" 2>/dev/null
  note "FAIL encode (encode.log):"; tail -5 "$LOGS/encode.log" | tee -a "$LOGS/summary.txt"; fail=1
fi
exit $fail
