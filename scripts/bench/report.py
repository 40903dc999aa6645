#!/usr/bin/python3
"""Turns bench-results.jsonl (scripts/bench.sh) into BENCHMARKS.md: medians
over repetitions, Go/PyTorch ratios, with the command, machine and versions."""
import collections
import datetime
import json
import platform
import statistics
import subprocess
import sys


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    path, command = sys.argv[1], sys.argv[2]
    rows = [json.loads(l) for l in open(path) if l.strip()]
    med = collections.defaultdict(list)
    for r in rows:
        for k, v in r.items():
            if isinstance(v, (int, float)) and k != "threads":
                med[(r["bench"], r["impl"], r["threads"], k)].append(v)
    m = {k: statistics.median(v) for k, v in med.items()}
    n = {k: len(v) for k, v in med.items()}
    threads = sorted({r["threads"] for r in rows})
    torch_v = next((r["torch"] for r in rows if "torch" in r), "?")
    try:
        cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    except OSError:
        cores = "?"
    p = print
    p("# Benchmarks: gotorch-train vs eager PyTorch\n")
    p(f"Command: `{command}`  ")
    p(f"Date: {datetime.date.today()}; machine: {cpu_model()}, {cores} cores; "
      f"libtorch/PyTorch {torch_v} (Debian, CPU, OpenBLAS); Go side linked against the same libtorch.  ")
    p("Medians over repetitions (runs interleaved Go/PyTorch); ratio = Go ÷ PyTorch for rates, PyTorch ÷ Go for times.\n")
    p("| benchmark | threads | gotorch-train | PyTorch | ratio |")
    p("|---|---|---|---|---|")
    for t in threads:
        g, r = m.get(("ops", "go", t, "add_inplace_us")), m.get(("ops", "pytorch", t, "add_inplace_us"))
        if g and r:
            p(f"| `a.add_(b)`, 1 element | {t} | {g:.3f} µs | {r:.3f} µs | {r / g:.2f}× |")
        g, r = m.get(("ops", "go", t, "add_free_us")), m.get(("ops", "pytorch", t, "add_free_us"))
        if g and r:
            p(f"| `r = a + b`, then free | {t} | {g:.3f} µs | {r:.3f} µs | {r / g:.2f}× |")
        g, r = m.get(("mlp", "go", t, "steps_per_s")), m.get(("mlp", "pytorch", t, "steps_per_s"))
        if g and r:
            p(f"| MLP 128-512-512-128 training, batch 64 | {t} | {g:.1f} steps/s | {r:.1f} steps/s | **{g / r:.2f}×** |")
        g, r = m.get(("mlp", "go", t, "peak_rss_mib")), m.get(("mlp", "pytorch", t, "peak_rss_mib"))
        if g and r:
            p(f"| MLP peak RSS | {t} | {g:.0f} MiB | {r:.0f} MiB | {g / r:.2f}× |")
        g, r = m.get(("step", "go", t, "steps_per_s")), m.get(("step", "pytorch", t, "steps_per_s"))
        if g and r:
            p(f"| Cell_Unet training step, batch 128 | {t} | {g:.2f} steps/s ({1e3 / g:.1f} ms) | {r:.2f} steps/s ({1e3 / r:.1f} ms) | **{g / r:.2f}×** |")
        g, r = m.get(("step", "go", t, "train_peak_rss_mib")), m.get(("step", "pytorch", t, "train_peak_rss_mib"))
        if g and r:
            p(f"| Cell_Unet training peak RSS | {t} | {g:.0f} MiB | {r:.0f} MiB | **{g / r:.2f}×** |")
        gm = m.get(("gemm", "pytorch", t, "ms_per_step"))
        g = m.get(("step", "go", t, "ms_per_step"))
        if gm and g:
            p(f"| GEMM-only floor of the step (PyTorch addmm/mm) | {t} | step = {g / gm:.2f}× the floor | {gm:.1f} ms | — |")
    reps = max(n.values()) if n else 0
    p(f"\n{reps} repetitions per cell. Raw results: `{path}`.")


if __name__ == "__main__":
    main()
