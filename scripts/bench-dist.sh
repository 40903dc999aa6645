#!/usr/bin/env bash
# Data-parallel benchmark on this machine: the Cell_Unet training step at
# the reference's global batch (128) run as
#   1 process  × 1 thread
#   1 process  × 2 threads
#   2 processes × 1 thread  (torchrun, Gloo over loopback; each computes 64 rows)
# on real latents (the PBMC cells through a one-step autoencoder). Each
# configuration trains SHORT and LONG steps; the per-step time is
# (duration(LONG) − duration(SHORT)) / (LONG − SHORT) from the trainer's own
# "trained N steps in T s" line (rank 0's), which cancels start-up, the first
# step's allocations and the step-0 checkpoint. Medians over REPS
# repetitions, configurations interleaved. The table replaces the
# data-parallel section of BENCHMARKS.md (between its markers), with this
# command; `make bench` runs it after scripts/bench.sh.
#
#   scripts/bench-dist.sh            # REPS=3 SHORT=20 LONG=120 BATCH=128
#   REUSE=1 scripts/bench-dist.sh    # rewrite the section from the last results
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
SHORT=${SHORT:-20}
LONG=${LONG:-120}
BATCH=${BATCH:-128}
PY=${REF_PYTHON:-/usr/bin/python3}
WORK=${WORK:-/var/tmp/gotorch-bench-dist}
DATA=${GOTORCH_TESTDATA_DIR:-../shared/data}/format_fixtures/anndata_0.8_written/pbmc4k_top2000_counts_csr_gzip.h5ad
mkdir -p "$WORK"
make -s build
BIN=$PWD/bin/gotorch-train
export OMP_WAIT_POLICY=PASSIVE

LAT=$WORK/latents.npz
if [ ! -f "$LAT" ]; then
  "$BIN" train-ae --data_dir "$DATA" --save_dir "$WORK/ae" --max_steps 1 --threads 2 --mem_log_interval 0 >/dev/null
  "$BIN" encode --data_dir "$DATA" --vae_path "$WORK/ae/model_seed=0_step=0.pt" --output "$LAT" --threads 2 >/dev/null
fi

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# train CONFIG STEPS: prints the trainer's duration in seconds.
train() {
  local cfg=$1 steps=$2 dir
  dir=$(mktemp -d "$WORK/run.XXXXXX")
  local args=(train --latents "$LAT" --save_dir "$dir" --model_name m --batch_size "$BATCH" --lr_anneal_steps "$steps"
    --save_interval 1000000 --log_interval 1000000 --mem_log_interval 0 --cleanup_interval 0)
  local log=$dir/out.log
  case $cfg in
    1x1) OMP_NUM_THREADS=1 "$BIN" "${args[@]}" --threads 1 > "$log" 2>&1 ;;
    1x2) OMP_NUM_THREADS=2 "$BIN" "${args[@]}" --threads 2 > "$log" 2>&1 ;;
    2x1) OMP_NUM_THREADS=1 "$PY" -m torch.distributed.run --nnodes=1 --nproc_per_node=2 --rdzv_backend=c10d \
           --rdzv_endpoint="localhost:$(free_port)" --rdzv_id="bench$$" --monitor_interval=0.5 \
           --redirects 1 --tee 1 --log_dir "$dir/logs" --no_python "$BIN" "${args[@]}" --threads 1 > "$log" 2>&1 ;;
  esac
  # duration = steps ÷ the printed rate (more digits than the printed seconds)
  sed -n 's/.*trained \([0-9]*\) steps in [0-9.]*s (\([0-9.]*\) steps\/s).*/\1 \2/p' "$log" | head -1 | awk '{ printf "%.6f\n", $1 / $2 }'
  rm -rf "$dir"
}

RAW=$WORK/results.txt
# The 1-minute load average before the runs: work other than this benchmark
# (the runs themselves load the machine, so the load when done says nothing).
if [ -z "${REUSE:-}" ]; then
  : > "$RAW"
  cut -d' ' -f1-3 /proc/loadavg > "$WORK/load-before.txt"
fi
for rep in $(seq "$([ -n "${REUSE:-}" ] && echo 0 || echo "$REPS")"); do
  for cfg in 1x1 1x2 2x1; do
    echo "repetition $rep/$REPS: $cfg" >&2
    s=$(train "$cfg" "$SHORT")
    l=$(train "$cfg" "$LONG")
    if [ -z "$s" ] || [ -z "$l" ]; then echo "bench-dist: a $cfg run failed (see $WORK)" >&2; exit 1; fi
    echo "$cfg $s $l" >> "$RAW"
  done
done

CMD="REPS=$REPS SHORT=$SHORT LONG=$LONG BATCH=$BATCH scripts/bench-dist.sh  (make bench)"
SECTION=$("$PY" - "$RAW" "$SHORT" "$LONG" "$BATCH" "$CMD" "$WORK/load-before.txt" <<'EOF'
import statistics, sys, datetime, os
raw, short, long_, batch, cmd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
before = open(sys.argv[6]).read().split()
per = {}
for line in open(raw):
    cfg, s, l = line.split()
    per.setdefault(cfg, []).append((float(l) - float(s)) / (long_ - short) * 1000)
med = {c: statistics.median(v) for c, v in per.items()}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
load = open("/proc/loadavg").read().split()[:3]
names = {"1x1": "1 process × 1 thread", "1x2": "1 process × 2 threads", "2x1": "2 processes × 1 thread (Gloo)"}
print("<!-- dist-begin: written by scripts/bench-dist.sh -->")
print("## Data-parallel training on this machine\n")
print(f"Command: `{cmd}`  ")
print(f"Date: {datetime.date.today()}; machine: {cpu}, {os.cpu_count()} cores; load average (1/5/15 min) before the runs {' / '.join(before)}, when done {' / '.join(load)} (the runs' own load included).  ")
if float(before[0]) > 0.5:
    print(f"**Provisional:** other work was running when the benchmark started (1-minute load average {before[0]} on {os.cpu_count()} cores), "
          "so these times are inflated and erratic, the two-process runs most (a descheduled rank stalls both at "
          "every all-reduce); rerun on a quiet machine.  ")
print(f"Cell_Unet training step, global batch {batch} (the 2-process run computes {batch//2} rows per process and "
      "all-reduces the 3,488,384-value gradient plus a small per-step agreement over loopback TCP); "
      f"per-step time = (duration of {long_} steps − duration of {short}) / {long_-short}, median of "
      f"{len(next(iter(per.values())))} repetitions (all: " +
      "; ".join(f"{c} " + " ".join(f"{x:.1f}" for x in v) for c, v in per.items()) + " ms).\n")
print("| configuration | step time | steps/s | speed-up vs 1 × 1 | efficiency per core |")
print("|---|---|---|---|---|")
for c in ["1x1", "1x2", "2x1"]:
    if c in med:
        cores = 1 if c == "1x1" else 2
        sp = med["1x1"] / med[c]
        print(f"| {names[c]} | {med[c]:.1f} ms | {1000/med[c]:.1f} | {sp:.2f}× | {sp/cores*100:.0f} % |")
print("\nThe run's mathematics is the same in every row (the same global batch and updates; see the README,"
      " *Data-parallel training*).")
print("<!-- dist-end -->")
EOF
)
# Replace the section in BENCHMARKS.md (append it when absent).
"$PY" - BENCHMARKS.md "$SECTION" <<'EOF'
import re, sys
path, section = sys.argv[1], sys.argv[2]
text = open(path).read()
pat = re.compile(r"<!-- dist-begin.*?<!-- dist-end -->", re.S)
text = pat.sub(lambda m: section, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + section + "\n"
open(path, "w").write(text)
EOF
echo "$SECTION"
