#!/usr/bin/python3
"""Writes scripts/bench-defaults.sh's results into BENCHMARKS.md as the
section "As a user runs it", between the markers
<!-- bench-defaults:begin --> and <!-- bench-defaults:end --> (replaced in
place; appended when absent, e.g. after scripts/bench.sh rewrote the file).

    defaults_report.py RESULTS.jsonl BENCHMARKS.md "COMMAND" CELLS TRAIN_STEPS AE_STEPS REF_STEPS [PROVISIONAL]
"""
import collections
import datetime
import json
import os
import statistics
import sys

from report import cpu_model  # scripts/bench/report.py

BEGIN, END = "<!-- bench-defaults:begin -->", "<!-- bench-defaults:end -->"
SETTINGS = [("empty", "**empty environment** (as a user runs it)"), ("threads1", "`--threads 1`"),
            ("passive", "all cores, `OMP_WAIT_POLICY=PASSIVE`"), ("active", "all cores, `OMP_WAIT_POLICY=ACTIVE`")]


def section(rows, command, cells, train_steps, ae_steps, ref_steps, provisional):
    rate = collections.defaultdict(list)
    header = {}
    timeouts = collections.Counter()
    for r in rows:
        key = (r["setting"], r["command"])
        if r["rate"] is None:
            timeouts[key] += 1
            continue
        rate[key].append(r["rate"])
        if r["header"]:
            header.setdefault(key, r["header"])
    med = {k: statistics.median(v) for k, v in rate.items()}
    reps = max(len(rate[k]) + timeouts[k] for k in set(rate) | set(timeouts))
    out = [BEGIN, "## As a user runs it", ""]
    if provisional:
        out += [f"**Provisional** ({provisional}): to be re-measured with `make bench` on a quiet machine.", ""]
    out += [f"Command: `{command}`  ",
            f"Date: {datetime.date.today()}; machine: {cpu_model()}, {os.cpu_count()} cores. "
            f"Medians over {reps} interleaved rounds.", "",
            "`gotorch-train` run exactly as the README shows it, with an empty environment (`env -i` with only "
            "PATH and HOME), against the thread settings a user might try instead. With nothing set the binary "
            "uses every core, sets `OMP_WAIT_POLICY=PASSIVE` (and `OPENBLAS_CORETYPE` where OpenBLAS picks weaker "
            "kernels than the CPU has) by re-executing itself, and says so in its first output line: `"
            + header.get(("empty", "train"), "?") + "`. A variable the user sets always wins. The restart "
            "loads libtorch twice, which the whole-command row includes. Last column: the empty environment's "
            "rate ÷ the best rate (for times, best time ÷ its time).", "",
            "| command (PBMC 4k, bundled) | " + " | ".join(h for _, h in SETTINGS) + " | empty vs best |",
            "|---|" + "---|" * (len(SETTINGS) + 1)]
    # (command, label, higher is better)
    what = [("train", f"`train` (Cell_Unet, batch 128, {train_steps} steps), steps/s", True),
            ("train-ae", f"`train-ae` (2,000 genes, {ae_steps} steps), steps/s", True),
            ("encode", f"`encode` ({cells:,} cells), cells/s of the encoding pass", True),
            ("encode-command", "`encode`, whole command (start-up, reading the .h5ad, encoding, writing), s", False)]
    for cmd, label, higher in what:
        vals = [med.get((s, cmd)) for s, _ in SETTINGS]
        present = [v for v in vals if v is not None]
        best = (max if higher else min)(present) if present else None
        cellsfmt = []
        for (s, _), v in zip(SETTINGS, vals):
            t = timeouts[(s, cmd)]
            txt = f"{v:.2f}" if v is not None else "—"
            if t:
                txt += f" ({t} run{'s' if t > 1 else ''} timed out)"
            cellsfmt.append(txt)
        ratio = f"**{(vals[0] / best if higher else best / vals[0]):.2f}**" if vals[0] and best else "—"
        out.append(f"| {label} | " + " | ".join(cellsfmt) + f" | {ratio} |")
    if timeouts:
        out += ["", "A run that timed out (RUN_TIMEOUT) is left out of its median; it took longer than the "
                    "timeout, so its rate was below steps ÷ timeout."]
    ref, ours = med.get(("empty", "reference-step")), med.get(("empty", "train"))
    if ref and ours:
        out += ["", f"The reference's training step (`scripts/bench/ref_bench.py step`: scDiffusion's own modules on "
                    f"Debian's torch, batch 128, {ref_steps} steps), also with an empty environment "
                    f"({header.get(('empty', 'reference-step'), '')}): **{ref:.2f} steps/s**. "
                    f"`gotorch-train train` as a user runs it: **{ours:.2f} steps/s, {ours / ref:.2f}×** the reference."]
    out += ["", "Raw results: `bench-defaults.jsonl` (not committed).", END]
    return "\n".join(out) + "\n"


def main():
    res, md, command, cells, train_steps, ae_steps, ref_steps = sys.argv[1:8]
    provisional = sys.argv[8] if len(sys.argv) > 8 else ""
    rows = [json.loads(l) for l in open(res) if l.strip()]
    new = section(rows, command, int(cells), train_steps, ae_steps, ref_steps, provisional)
    text = open(md).read() if os.path.exists(md) else ""
    if BEGIN in text and END in text:
        a, b = text.index(BEGIN), text.index(END) + len(END)
        text = text[:a] + new.rstrip("\n") + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + new
    with open(md, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
