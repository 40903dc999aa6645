#!/usr/bin/env bash
# The CUDA check, in one run on the GPU machine (binding.md §10). Prepare
# here (no Go there):
#   make gpu-binaries            # bin/gpu/*.test and bin/gpu/gotorch-bench, linked only to -lcgotorch
# then, on the GPU machine, from the repository root (carry bin/gpu):
#   OUT=/path/for/logs scripts/gpu-check.sh
# It builds the CUDA flavour of libcgotorch.so against the venv's pip torch,
# runs every test binary with CGOTORCH_REQUIRE_CUDA=1 (CUDA tests must run,
# not skip), then benchmarks the Cell_Unet step on the GPU against the
# PyTorch reference step in the same run. Logs go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-/tmp/gpu-check}
PY=${TORCH_PYTHON:-python3}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
"$PY" -c 'import torch;print("torch", torch.__version__, "cuda", torch.version.cuda, "cxx11 abi", torch._C._GLIBCXX_USE_CXX11_ABI)'
g++ --version | head -1
command -v nvcc && nvcc --version | tail -1
nproc

echo "== CUDA shim"
time make -j"$(nproc)" shim FLAVOR=cuda TORCH_PYTHON="$PY" || { echo "FAIL: shim build"; exit 1; }
ldd cgotorch/build/cuda/libcgotorch.so | grep -E 'torch|c10|cuda|not found'
# NVML: go-nvml dlopens libnvidia-ml.so.1; help it if ldconfig does not know it.
if ! ldconfig -p | grep -q 'libnvidia-ml.so.1'; then
  nv=$(find / -name 'libnvidia-ml.so.1' -not -path '*/proc/*' 2>/dev/null | head -1)
  if [ -n "$nv" ]; then
    nvdir=$(dirname "$nv")
    export LD_LIBRARY_PATH=$nvdir:${LD_LIBRARY_PATH:-}
  fi
fi
export LD_LIBRARY_PATH=$PWD/cgotorch/build/cuda:${LD_LIBRARY_PATH:-}
export CGOTORCH_REQUIRE_CUDA=1 OMP_WAIT_POLICY=PASSIVE GOTORCH_TESTDATA_DIR=${GOTORCH_TESTDATA_DIR:-$PWD/../shared/data}

echo "== tests (CUDA required)"
fail=0
for t in bin/gpu/*.test; do
  name=$(basename "$t" .test)
  dir=${name//_//}
  bin=$PWD/$t
  if (cd "$dir" && "$bin" -test.v -test.timeout 10m > "$OUT/$name.log" 2>&1); then
    echo "ok   $dir: $(grep -c '^--- PASS' "$OUT/$name.log") passed, $(grep -c '^--- SKIP' "$OUT/$name.log") skipped"
  else
    echo "FAIL $dir"; grep -E '^(--- FAIL|\s+.*_test.go)' "$OUT/$name.log" | head -20; fail=1
  fi
done

echo "== benchmarks on cuda:0 (same run: gotorch-train, then the PyTorch reference step)"
# The default step on CUDA is the fused step's ATen backend; -impl generic
# is the autograd path, for comparison (ops_per_step/kernels_per_step: the
# dispatcher's counts of each).
for b in 128 1024; do
  bin/gpu/gotorch-bench step -device cuda -batch "$b" -steps 300 -threads 4 | tee -a "$OUT/bench.jsonl"
  bin/gpu/gotorch-bench step -device cuda -batch "$b" -steps 300 -threads 4 -impl generic | tee -a "$OUT/bench.jsonl"
  "$PY" scripts/bench/ref_bench.py step --device cuda --batch "$b" --steps 300 --threads 4 | tee -a "$OUT/bench.jsonl"
done
(cd monitor && ../bin/gpu/monitor.test -test.run '^$' -test.bench 'Sample|LogMemoryUsage|Cleanup' -test.benchtime 500x) | tee "$OUT/monitor_bench.log"
echo "== done (fail=$fail); logs in $OUT"
exit $fail
