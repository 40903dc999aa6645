#!/usr/bin/env bash
# "As a user runs it": gotorch-train's train, train-ae and encode on the
# bundled PBMC data, started as the README shows them with an EMPTY
# environment (env -i with only PATH and HOME: no OMP_*, OPENBLAS_*), next
# to the thread settings a user might try instead:
#   empty     nothing set, no --threads: the binary chooses (all cores, and
#             OMP_WAIT_POLICY=PASSIVE, OPENBLAS_CORETYPE by re-executing itself)
#   threads1  --threads 1
#   passive   all cores, OMP_WAIT_POLICY=PASSIVE exported
#   active    all cores, OMP_WAIT_POLICY=ACTIVE exported
# and the reference's training step (scripts/bench/ref_bench.py step: the
# original scDiffusion modules on Debian's torch, PyTorch's default threads)
# with an empty environment too. Rounds are interleaved (the order of the
# settings rotates); the medians go into BENCHMARKS.md's "As a user runs it"
# section, replaced in place, with this command. Raw results:
# bench-defaults.jsonl (not committed).
#
# train and train-ae report their training loop's rate, encode the encoding
# pass's (what the commands print); the whole encode command's wall time,
# start-up and reading the .h5ad included, is a row of its own.
#
#   scripts/bench-defaults.sh     # REPS=2 TRAIN_STEPS=150 AE_STEPS=40 REF_STEPS=100 RUN_TIMEOUT=300
#   PROVISIONAL="shared machine, other jobs running" scripts/bench-defaults.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-2}
TRAIN_STEPS=${TRAIN_STEPS:-150}
AE_STEPS=${AE_STEPS:-40}
REF_STEPS=${REF_STEPS:-100}
# A setting that makes a run pathologically slow (spinning threads on
# oversubscribed cores) is recorded as timed out rather than waited for.
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
DATA=${DATA:-../shared/data/format_fixtures/anndata_0.8_written/pbmc4k_top2000_counts_csr_gzip.h5ad}
PY=${REF_PYTHON:-/usr/bin/python3}
OUT=${BENCH_OUT:-bench-defaults.jsonl}
BIN=$PWD/bin/gotorch-train
[ -f "$DATA" ] || { echo "bench-defaults.sh: data file $DATA not found (set DATA=...)" >&2; exit 3; }
DATA=$(realpath "$DATA")

make -s build
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
: > "$OUT"

# Empty environment plus the setting's variables.
clean() { env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$HOME" "$@"; }
timed() { timeout "$RUN_TIMEOUT" env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$HOME" "$@"; }
with() { # setting command...
  local s=$1; shift
  case $s in
    empty) timed "$@" ;;
    threads1) timed "$@" --threads 1 ;;
    passive) timed OMP_WAIT_POLICY=PASSIVE "$@" ;;
    active) timed OMP_WAIT_POLICY=ACTIVE "$@" ;;
  esac
}
# ran LOG NAME: 0 if the run succeeded, 1 if it timed out; exits on failure.
ran() {
  local rc=$1 log=$2 name=$3
  [ "$rc" -eq 0 ] && return 0
  [ "$rc" -eq 124 ] && { echo "  $name: timed out after ${RUN_TIMEOUT}s" >&2; return 1; }
  cat "$log"
  fail "$name failed (exit $rc)"
}
fail() { echo "bench-defaults.sh: $*" >&2; exit 1; }

echo "preparing: a short autoencoder and the latents (not timed)" >&2
clean "$BIN" train-ae --data_dir "$DATA" --label_key celltype --save_dir "$WORK/ae0" --max_steps 2 \
  --checkpoint_freq 1000 --log_interval 1000 > "$WORK/prep.log" 2>&1 || { cat "$WORK/prep.log"; fail "train-ae failed"; }
AE=$WORK/ae0/model_seed=0_step=1.pt
clean "$BIN" encode --data_dir "$DATA" --label_key celltype --vae_path "$AE" --output "$WORK/latents.npz" \
  >> "$WORK/prep.log" 2>&1 || { cat "$WORK/prep.log"; fail "encode failed"; }
CELLS=$(sed -n 's/^encoded \([0-9]*\) cells.*/\1/p' "$WORK/prep.log")

record() { # setting command rate unit header (rate null: timed out)
  printf '{"setting":"%s","command":"%s","rate":%s,"unit":"%s","header":"%s"}\n' "$1" "$2" "$3" "$4" "${5//\"/\'}" >> "$OUT"
  echo "  $1 $2: $3 $4" >&2
}

settings=(empty threads1 passive active)
for rep in $(seq "$REPS"); do
  echo "round $rep/$REPS" >&2
  n=${#settings[@]}
  for i in $(seq 0 $((n - 1))); do
    s=${settings[$(((i + rep - 1) % n))]}
    log=$WORK/$s-$rep
    rc=0
    with "$s" "$BIN" train --latents "$WORK/latents.npz" --save_dir "$WORK/ck-$s-$rep" --model_name pbmc4k \
      --lr_anneal_steps "$TRAIN_STEPS" --log_interval 100000 --save_interval 100000 --mem_log_interval 100000 \
      > "$log.train" 2>&1 || rc=$?
    rate=null
    if ran $rc "$log.train" "train ($s)"; then
      rate=$(sed -n 's/^trained .* (\([0-9.]*\) steps\/s).*/\1/p' "$log.train")
    fi
    record "$s" train "${rate:?no rate in $log.train}" steps/s "$(grep -m1 '^runtime:' "$log.train")"

    rc=0
    with "$s" "$BIN" train-ae --data_dir "$DATA" --label_key celltype --save_dir "$WORK/ae-$s-$rep" \
      --max_steps "$AE_STEPS" --checkpoint_freq 100000 --log_interval "$AE_STEPS" > "$log.ae" 2>&1 || rc=$?
    rate=null
    if ran $rc "$log.ae" "train-ae ($s)"; then
      rate=$(sed -n 's/^step [0-9]*: .*, \([0-9.]*\) steps\/s$/\1/p' "$log.ae" | tail -1)
    fi
    record "$s" train-ae "${rate:?no rate in $log.ae}" steps/s "$(grep -m1 '^runtime:' "$log.ae")"

    rc=0
    t0=$(date +%s.%N)
    with "$s" "$BIN" encode --data_dir "$DATA" --label_key celltype --vae_path "$AE" --output "$WORK/z-$s.npz" \
      > "$log.enc" 2>&1 || rc=$?
    t1=$(date +%s.%N)
    rate=null secs=null
    if ran $rc "$log.enc" "encode ($s)"; then
      rate=$(sed -n 's/^encoded \([0-9]*\) cells in \([0-9.]*\)s.*/\1 \2/p' "$log.enc" | awk '{ printf "%.1f", $1 / $2 }')
      secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    fi
    record "$s" encode "${rate:?no rate in $log.enc}" cells/s "$(grep -m1 '^runtime:' "$log.enc")"
    record "$s" encode-command "$secs" s ""
  done
  clean "$PY" scripts/bench/ref_bench.py step --threads 0 --steps "$REF_STEPS" > "$WORK/ref" 2>&1 \
    || { cat "$WORK/ref"; fail "reference step failed"; }
  rate=$(tail -1 "$WORK/ref" | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(d["steps_per_s"])')
  threads=$(tail -1 "$WORK/ref" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["threads"])')
  record empty reference-step "$rate" steps/s "PyTorch default: $threads intra-op thread(s)"
done

cmd=$(printf 'REPS=%s TRAIN_STEPS=%s AE_STEPS=%s REF_STEPS=%s RUN_TIMEOUT=%s scripts/bench-defaults.sh  (make bench)' \
  "$REPS" "$TRAIN_STEPS" "$AE_STEPS" "$REF_STEPS" "$RUN_TIMEOUT")
"$PY" scripts/bench/defaults_report.py "$OUT" BENCHMARKS.md "$cmd" "$CELLS" "$TRAIN_STEPS" "$AE_STEPS" "$REF_STEPS" "${PROVISIONAL:-}"
sed -n '/<!-- bench-defaults:begin -->/,/<!-- bench-defaults:end -->/p' BENCHMARKS.md
