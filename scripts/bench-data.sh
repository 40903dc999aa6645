#!/usr/bin/env bash
# Memory benchmark of the data path (issue: preprocessing + encode at the
# reference's Open Problems shape): a synthetic raw-count .h5ad of 69,249
# cells × 13,431 genes (~10% non-zero, 22 classes) is preprocessed and
# encoded by `gotorch-train encode` (CSR all the way, chunked no-grad encode
# with exact dataset-wide BatchNorm statistics) and by the reference's path
# in PyTorch (scripts/bench/data_ref.py: densify the whole matrix, one
# forward pass with autograd on). Peak RSS and wall time of each go to
# BENCHMARKS-data.md with this command. The generated files live in
# $WORK (default /var/tmp/gotorch-bench) and are not committed.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/var/tmp/gotorch-bench}
THREADS=${THREADS:-2}
PY=${REF_PYTHON:-/usr/bin/python3}
mkdir -p "$WORK"
make -s build
go build -o bin/gotorch-bench ./cmd/gotorch-bench
go build -o bin/gotorch-synth ./cmd/gotorch-synth
H5AD=$WORK/openproblems_synth.h5ad
[ -f "$H5AD" ] || ./bin/gotorch-synth "$H5AD"
AE=$WORK/ae/model_seed=0_step=0.pt
[ -f "$AE" ] || ./bin/gotorch-train train-ae --data_dir "$H5AD" --save_dir "$WORK/ae" --max_steps 1 \
  --checkpoint_freq 1 --log_interval 1 --mem_log_interval 0 --threads "$THREADS" >/dev/null
core=$(GOTORCH_NO_BLAS_REEXEC=1 ./bin/gotorch-bench blas-advice)
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS OMP_WAIT_POLICY=PASSIVE OPENBLAS_CORETYPE=$core

go_log=$WORK/go_encode.log
/usr/bin/time -v ./bin/gotorch-train encode --data_dir "$H5AD" --vae_path "$AE" --output "$WORK/latents.npz" \
  --threads "$THREADS" > "$go_log" 2>&1
go_rss=$(awk '/Maximum resident set size/ {print $6}' "$go_log")
go_wall=$(awk '/Elapsed \(wall clock\)/ {print $8}' "$go_log")
ref=$("$PY" scripts/bench/data_ref.py "$H5AD" "$AE")

"$PY" - "$go_rss" "$go_wall" "$ref" "$THREADS" <<'PYEOF' > BENCHMARKS-data.md
import datetime, json, sys
go_rss_kb, go_wall, ref, threads = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
go = go_rss_kb / 1024
p = print
p("# Data path memory benchmark: preprocess + encode at the Open Problems shape\n")
p("Command: `THREADS=%s scripts/bench-data.sh` (part of `make bench`); date %s." % (threads, datetime.date.today()))
p("Input: synthetic raw counts, %d cells × %d genes, ~10%% non-zero (93.0 M values), 22 classes, CSR .h5ad "
  "(`gotorch-synth`); autoencoder 13,431 → [1024, 1024, 1024] → 128 (32.0 M parameters).\n" % (ref["cells"], ref["genes"]))
p("| | gotorch-train encode | reference path (PyTorch) | ratio |")
p("|---|---|---|---|")
p("| peak RSS, whole run | %.0f MiB | %.0f MiB (encode on the CPU) | **%.1f %%** |" % (go, ref["encode_peak_mib"], 100 * go / ref["encode_peak_mib"]))
p("| peak RSS vs the reference's host peak (read, preprocess, densify, torch.tensor) | %.0f MiB | %.0f MiB | **%.1f %%** (goal ≤ 25 %%) |" % (go, ref["host_peak_mib"], 100 * go / ref["host_peak_mib"]))
p("| wall time | %s | %.1f s | |" % (go_wall, ref["encode_s"]))
p("\ngotorch-train keeps the matrix as CSR, encodes 1,024-row chunks under no-grad with the exact statistics of all cells "
  "in every BatchNorm (layer-wise passes, host activation cache) and drops the matrix after the first pass. The "
  "reference densifies the matrix twice (`toarray`, `torch.tensor`) and runs one forward pass with autograd on; on "
  "its GPU the activation part of that peak (%.0f MiB here) is device memory. Reference phases: read %.0f MiB, "
  "preprocess %.0f MiB, densify %.0f MiB, encode %.0f MiB (peak RSS after each)." % (
      ref["encode_peak_mib"] - ref["host_peak_mib"], ref["read_peak_mib"], ref["preprocess_peak_mib"],
      ref["host_peak_mib"], ref["encode_peak_mib"]))
PYEOF
cat BENCHMARKS-data.md
