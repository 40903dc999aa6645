#!/usr/bin/python3
"""Turns bench-results.jsonl (scripts/bench.sh) into BENCHMARKS.md: medians
over repetitions, gotorch-train/PyTorch ratios per environment, with the
command, the machine and the versions.

    report.py RESULTS.jsonl "COMMAND" OPENBLAS_CORE > BENCHMARKS.md
    go test -bench ... ./monitor | report.py --gobench >> RESULTS.jsonl
"""
import collections
import datetime
import json
import platform
import re
import statistics
import subprocess
import sys


def gobench():
    for line in sys.stdin:
        m = re.match(r"^(Benchmark\S+?)(-\d+)?\s+(\d+)\s+([\d.]+) ns/op", line)
        if m:
            print(json.dumps({"bench": "gobench", "impl": "go", "threads": 0, "mode": "", "name": m.group(1),
                              "ns_per_op": float(m.group(4))}))


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    if sys.argv[1] == "--gobench":
        return gobench()
    path, command, core = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else ""
    rows = [json.loads(l) for l in open(path) if l.strip()]
    med = collections.defaultdict(list)
    gob = {}
    for r in rows:
        if r["bench"] == "gobench":
            gob[r["name"]] = r["ns_per_op"]
            continue
        for k, v in r.items():
            if isinstance(v, (int, float)) and k != "threads":
                med[(r.get("mode", ""), r["bench"], r["impl"], r["threads"], k)].append(v)
    m = {k: statistics.median(v) for k, v in med.items()}
    reps = max((len(v) for v in med.values()), default=0)
    threads = sorted({r["threads"] for r in rows if r["bench"] != "gobench"})
    modes = [x for x in ("matched", "default") if any(k[0] == x for k in m)]
    torch_v = next((r["torch"] for r in rows if r.get("impl") == "pytorch" and "torch" in r), "?")
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    cores_go = {r.get("mode"): r.get("openblas_core") for r in rows if r.get("impl") == "go" and r.get("openblas_core")}
    p = print
    p("# Benchmarks: gotorch-train vs eager PyTorch\n")
    p(f"Command: `{command}`  ")
    p(f"Date: {datetime.date.today()}; machine: {cpu_model()}, {cores} cores; "
      f"libtorch/PyTorch {torch_v} (Debian 12, CPU, OpenBLAS 0.3.21). Both sides run the same libtorch build.  ")
    p(f"Medians over {reps} repetitions, Go and PyTorch runs interleaved. Ratio: gotorch-train ÷ PyTorch for rates, "
      "PyTorch ÷ gotorch-train for times (above 1 means gotorch-train is better).\n")
    p("Environments: **matched** gives both processes the same settings: "
      f"`OPENBLAS_CORETYPE={core}` (the kernels this CPU supports; Debian's OpenBLAS otherwise falls back to its "
      "SSE3 \"Prescott\" kernels on this CPU model) and glibc `MALLOC_MMAP_THRESHOLD_`/`MALLOC_TRIM_THRESHOLD_` "
      "(so freed tensor memory is reused instead of page-faulted in again every step). **default** sets nothing: "
      "PyTorch runs as installed; gotorch-train applies both settings itself "
      f"(kernels used: {', '.join(f'{k}: {v}' for k, v in cores_go.items())}).\n")
    for mode in modes:
        p(f"## {mode} environment\n")
        p("| benchmark | threads | gotorch-train | PyTorch | ratio |")
        p("|---|---|---|---|---|")
        for t in threads:
            def g(b, i, k):
                return m.get((mode, b, i, t, k))
            a, b = g("ops", "go", "add_inplace_us"), g("ops", "pytorch", "add_inplace_us")
            if a and b:
                p(f"| `a.add_(b)`, 1 element | {t} | {a:.3f} µs | {b:.3f} µs | {b / a:.2f}× |")
            a, b = g("ops", "go", "add_free_us"), g("ops", "pytorch", "add_free_us")
            if a and b:
                p(f"| `r = a + b`, then free | {t} | {a:.3f} µs | {b:.3f} µs | {b / a:.2f}× |")
            a, b = g("mlp", "go", "steps_per_s"), g("mlp", "pytorch", "steps_per_s")
            if a and b:
                p(f"| MLP 128-512-512-128 training, batch 64 | {t} | {a:.1f} steps/s | {b:.1f} steps/s | **{a / b:.2f}×** |")
            a, b = g("mlp-fused", "go", "steps_per_s"), g("mlp", "pytorch", "steps_per_s")
            if a and b:
                p(f"| same MLP, gotorch-train's flat fused AdamW (vs torch.optim.AdamW) | {t} | {a:.1f} steps/s | {b:.1f} steps/s | **{a / b:.2f}×** |")
            a, b = g("mlp", "go", "peak_rss_mib"), g("mlp", "pytorch", "peak_rss_mib")
            if a and b:
                p(f"| MLP peak RSS | {t} | {a:.0f} MiB | {b:.0f} MiB | {a / b:.2f}× of PyTorch's |")
            a, b = g("step", "go", "steps_per_s"), g("step", "pytorch", "steps_per_s")
            if a and b:
                p(f"| Cell_Unet training step, batch 128 | {t} | {a:.2f} steps/s ({1e3 / a:.1f} ms) | "
                  f"{b:.2f} steps/s ({1e3 / b:.1f} ms) | **{a / b:.2f}×** |")
            a, b = g("step", "go", "train_peak_rss_mib"), g("step", "pytorch", "train_peak_rss_mib")
            if a and b:
                p(f"| Cell_Unet training peak RSS | {t} | {a:.0f} MiB | {b:.0f} MiB | **{a / b:.2f}×** of PyTorch's |")
            gm, a = g("gemm", "pytorch", "ms_per_step"), g("step", "go", "ms_per_step")
            b = g("step", "pytorch", "ms_per_step")
            if gm and a and b:
                p(f"| GEMM-only floor of the step (forward + backward matrix products) | {t} | "
                  f"step = {a / gm:.2f}× the floor ({a - gm:.1f} ms beyond it) | {gm:.1f} ms; step = {b / gm:.2f}× "
                  f"({b - gm:.1f} ms beyond) | — |")
        p("")
    if gob:
        step = m.get(("default", "step", "go", 1, "ms_per_step")) or m.get(("matched", "step", "go", 1, "ms_per_step"))
        p("## Memory monitor cost\n")
        p("`go test -run '^$' -bench 'LogMemoryUsage|CleanupMemory' -benchtime 2000x ./monitor/` (CPU: RSS, "
          "VmHWM, CPU allocator and live handles; no NVML on this machine).\n")
        p("| operation | cost |")
        p("|---|---|")
        names = {"BenchmarkLogMemoryUsageNotDue": "LogMemoryUsage on a step that is not due",
                 "BenchmarkLogMemoryUsageDue": "LogMemoryUsage on a due step (sample + line)",
                 "BenchmarkLogMemoryUsageInterval100": "monitoring of 100 steps at log_interval 100",
                 "BenchmarkCleanupMemory": "one CleanupMemory (Go GC, host trim; no CUDA)"}
        for k, label in names.items():
            if k in gob:
                v = gob[k]
                p(f"| {label} | {v:.0f} ns |" if v < 1000 else f"| {label} | {v / 1e3:.1f} µs |")
        if step and "BenchmarkLogMemoryUsageInterval100" in gob:
            per_step = gob["BenchmarkLogMemoryUsageInterval100"] / 100 / 1e6
            p(f"\nAt log_interval 100 monitoring costs {per_step * 1e3:.2f} µs per step, "
              f"{100 * per_step / step:.4f} % of a {step:.1f} ms Cell_Unet step (goal < 1 %).")
        if step and "BenchmarkCleanupMemory" in gob:
            c = gob["BenchmarkCleanupMemory"] / 1e6
            p(f"One cleanup costs {c:.2f} ms; at cleanup_interval 1000 that is {100 * c / (1000 * step):.4f} % of "
              "training time (on CUDA, emptyCache and re-growing the cache add to this; see memory.md M5).")
    p(f"\nRaw results: `{path}` (not committed).")


if __name__ == "__main__":
    main()
