#!/usr/bin/python3
"""Turns bench-results.jsonl (scripts/bench.sh) into BENCHMARKS.md: medians
over repetitions, gotorch-train/PyTorch ratios per environment, with the
command, the machine and the versions.

    report.py RESULTS.jsonl "COMMAND" OPENBLAS_CORE > BENCHMARKS.md
    report.py RESULTS.jsonl "COMMAND" OPENBLAS_CORE --splice BENCHMARKS.md
    go test -bench ... ./monitor | report.py --gobench >> RESULTS.jsonl

--splice rewrites only the sampling section of an existing report (between
its <!-- sample:begin --> and <!-- sample:end --> markers, or appended).
"""
import collections
import datetime
import json
import os
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


def targets(m, modes, threads):
    """The issue-12 targets, each measured case with its figure and verdict."""
    rows = []
    for mode in [x for x in ("matched", "haswell") if x in modes]:
        for t in threads:
            def g(b, i, k):
                return m.get((mode, b, i, t, k))
            a, b = g("step", "go", "ms_per_step"), g("step", "pytorch", "ms_per_step")
            if a and b:
                rows.append(("Cell_Unet step ≥ 1.5× the reference", mode, t, f"{b / a:.2f}×", b / a >= 1.5))
            fl = g("gemm", "go", "ms_per_step")
            if a and fl:
                rows.append(("Cell_Unet step ≤ 1.3× its GEMM-only floor", mode, t, f"{a / fl:.2f}×", a / fl <= 1.3))
            a, b = g("ae", "go", "ms_per_step"), g("ae", "pytorch", "ms_per_step")
            if a and b:
                rows.append(("autoencoder step ≥ 1.5× the reference", mode, t, f"{b / a:.2f}×", b / a >= 1.5))
            a, b = g("step", "go", "train_peak_rss_mib"), g("step", "pytorch", "train_peak_rss_mib")
            if a and b:
                rows.append(("Cell_Unet training peak RSS ≤ 0.8× the reference's", mode, t, f"{a / b:.2f}×", a / b <= 0.8))
    if not rows:
        return
    print("## Targets (issue 12)\n")
    print("| target | environment | threads | measured | met |")
    print("|---|---|---|---|---|")
    for name, mode, t, v, ok in rows:
        print(f"| {name} | {mode} | {t} | {v} | {'yes' if ok else '**no**'} |")
    print("")


def bench_name(r):
    """The benchmark with its variant: sample, sample/bf16, sample-gemm/shared, ..."""
    name = r["bench"]
    if r.get("precision", "fp32") != "fp32":
        name += "/" + r["precision"]
    if "forward" in r:
        name += "/" + r["forward"]
    return name


SAMPLE_BEGIN, SAMPLE_END = "<!-- sample:begin -->", "<!-- sample:end -->"


def sample_section(m, rows, modes, threads, command, core):
    """The sampling tables (scripts/bench.sh with "sample" in BENCHES)."""
    out = []
    p = out.append
    if not any(k[1] == "sample" for k in m):
        return out
    sr = next(r for r in rows if r["bench"] == "sample")
    reps = max(len([1 for r in rows if r["bench"] == "sample" and r["impl"] == "go" and r.get("mode") == md
                    and r["threads"] == t and r.get("precision", "fp32") == "fp32"]) for md in modes for t in threads)
    torch_v = next((r["torch"] for r in rows if r.get("impl") == "pytorch" and "torch" in r), "?")
    p(SAMPLE_BEGIN)
    p("## Sampling: the ancestral loop (cell_sample.py's p_sample_loop)\n")
    p(f"Command: `{command}`  ")
    p(f"Date: {datetime.date.today()}; machine: {cpu_model()}, {os.cpu_count()} cores; libtorch/PyTorch {torch_v} "
      f"(Debian 12, CPU); OpenBLAS kernels `{core}` in the matched environment.  ")
    p(f"Batch {sr['batch']}, {sr['steps']} timed steps of the 1000-step schedule (after 5 warm-up steps, ending at t = 0), "
      "the default Cell_Unet after seed 0 (timing does not depend on the weights), no guidance; medians over "
      f"{reps} repetitions, gotorch-train and the reference interleaved. The reference is "
      "`scripts/bench/sample_ref.py` (the reference's p_sample_loop from `scripts/reference/scdiffusion_ref.py`).  ")
    loads = {r["when"]: r for r in rows if r["bench"] == "loadavg"}
    load = ""
    if loads:
        load = " Load average (1 / 5 / 15 min) " + ", ".join(
            f"at the {w} of the run {r['load1']:.1f} / {r['load5']:.1f} / {r['load15']:.1f}" for w, r in loads.items()) + \
            f" on {os.cpu_count()} cores: above the thread count, other processes shared the cores."
    p("**CPU time** is the process's user + system time over the timed steps: with one thread it is the loop's cost "
      "even when other processes share the cores, so on a busy machine it is the figure to compare; wall-clock "
      f"figures then only bound it.{load}  ")
    p("Matrix-product floors, timed in the same run: *ours* = the products the loop really computes (the shared-step "
      "forward: every fc, out1 and out2 at the batch; the time embedding and the 7 emb_layers once, on one row, "
      "folded into the fc biases); *full* = all 18 Linears at the batch, as the reference's forward computes them.  ")
    p("Targets (issue 13): loop ≤ 1.15× its matrix-product floor; ≥ 1.3× the reference's cells·steps/s at 2 threads; "
      "peak RSS ≤ 0.8× the reference's; bf16 ≥ 1.8× the fp32 loop where the CPU has AVX512-BF16 or AMX.\n")
    for mode in modes:
        if not any(k[0] == mode and k[1] == "sample" for k in m):
            continue
        p(f"### {mode} environment\n")
        p("| measure | threads | gotorch-train | PyTorch reference | ratio |")
        p("|---|---|---|---|---|")
        for t in threads:
            def g(b, i, k):
                return m.get((mode, b, i, t, k))
            a, b = g("sample", "go", "cells_steps_per_s"), g("sample", "pytorch", "cells_steps_per_s")
            if a and b:
                p(f"| ancestral loop, wall clock | {t} | {a:,.0f} cells·steps/s ({1e3 * sr['batch'] / a:.1f} ms/step) | "
                  f"{b:,.0f} cells·steps/s ({1e3 * sr['batch'] / b:.1f} ms/step) | **{a / b:.2f}×** |")
            a, b = g("sample", "go", "cpu_ms_per_step"), g("sample", "pytorch", "cpu_ms_per_step")
            if a and b:
                p(f"| ancestral loop, CPU time per step | {t} | {a:.1f} ms | {b:.1f} ms | **{b / a:.2f}×** |")
            for clock, key in (("wall", "ms_per_step"), ("CPU", "cpu_ms_per_step")):
                lo, fo, lr_, fr = (g("sample", "go", key), g("sample-gemm/shared", "go", key),
                                   g("sample", "pytorch", key), g("sample-gemm/full", "pytorch", key))
                if lo and fo and lr_ and fr:
                    p(f"| loop ÷ its matrix-product floor ({clock}) | {t} | **{lo / fo:.2f}×** (floor {fo:.1f} ms) | "
                      f"{lr_ / fr:.2f}× (floor {fr:.1f} ms) | — |")
            a, b = g("sample-gemm/shared", "go", "cpu_ms_per_step"), g("sample-gemm/full", "go", "cpu_ms_per_step")
            if a and b:
                p(f"| matrix products per step, CPU time: ours vs full forward | {t} | {a:.1f} ms | {b:.1f} ms (full, "
                  f"in gotorch-train) | {b / a:.2f}× fewer |")
            a, b = g("sample", "go", "peak_rss_mib"), g("sample", "pytorch", "peak_rss_mib")
            if a and b:
                p(f"| peak RSS | {t} | {a:.0f} MiB | {b:.0f} MiB | **{a / b:.2f}×** of the reference's |")
            for clock, key, inv in (("wall", "cells_steps_per_s", False), ("CPU", "cpu_ms_per_step", True)):
                a, b = g("sample/bf16", "go", key), g("sample", "go", key)
                if a and b:
                    ratio = b / a if inv else a / b
                    val = f"{a:.1f} ms/step" if inv else f"{a:,.0f} cells·steps/s"
                    ref = f"{b:.1f} ms/step" if inv else f"{b:,.0f} cells·steps/s"
                    p(f"| bf16 loop vs the fp32 loop ({clock}) | {t} | {val} (bf16) | {ref} (fp32, gotorch-train) | "
                      f"**{ratio:.2f}×** |")
            a, b = g("sample-gemm/bf16/shared", "go", "cpu_ms_per_step"), g("sample-gemm/shared", "go", "cpu_ms_per_step")
            if a and b:
                p(f"| matrix products per step, bf16 vs fp32 (CPU) | {t} | {a:.1f} ms | {b:.1f} ms | {b / a:.2f}× |")
        p("")
    q = [r for r in rows if r["bench"] == "sample-quality"]
    if q:
        r = q[-1]
        p(f"bf16 against fp32 samples of the same seed ({r['cells']} cells, {r['genes']} genes, backbone `{r['model']}`): "
          f"per-gene mean Pearson {r['gene_mean_pearson']:.4f}, Spearman {r['gene_mean_spearman']:.4f}; per-coordinate "
          f"latent mean Pearson {r['latent_mean_pearson']:.4f}; paired cells: mean cosine {r['pair_cosine_mean']:.4f}, "
          f"relative L2 distance {r['pair_rel_l2']:.4f}.\n")
    p(SAMPLE_END)
    return out


def splice(path, section):
    """Replaces the sampling section of the report at path (or appends it)."""
    try:
        text = open(path).read()
    except FileNotFoundError:
        text = ""
    block = "\n".join(section) + "\n"
    if SAMPLE_BEGIN in text and SAMPLE_END in text:
        head, rest = text.split(SAMPLE_BEGIN, 1)
        tail = rest.split(SAMPLE_END, 1)[1].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    with open(path, "w") as f:
        f.write(text)


def main():
    if sys.argv[1] == "--gobench":
        return gobench()
    args = sys.argv[1:]
    splice_to = None
    if "--splice" in args:
        i = args.index("--splice")
        splice_to = args[i + 1]
        del args[i:i + 2]
    path, command, core = args[0], args[1], args[2] if len(args) > 2 else ""
    rows = [json.loads(l) for l in open(path) if l.strip()]
    med = collections.defaultdict(list)
    gob = {}
    for r in rows:
        if r["bench"] == "gobench":
            gob[r["name"]] = r["ns_per_op"]
            continue
        if r["bench"] == "loadavg":
            continue
        for k, v in r.items():
            if isinstance(v, (int, float)) and k != "threads":
                med[(r.get("mode", ""), bench_name(r), r["impl"], r["threads"], k)].append(v)
    m = {k: statistics.median(v) for k, v in med.items()}
    reps = max((len(v) for v in med.values()), default=0)
    threads = sorted({r["threads"] for r in rows if r["bench"] not in ("gobench", "sample-quality", "loadavg")})
    modes = [x for x in ("matched", "haswell", "default") if any(k[0] == x for k in m)]
    torch_v = next((r["torch"] for r in rows if r.get("impl") == "pytorch" and "torch" in r), "?")
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    cores_go = {r.get("mode"): r.get("openblas_core") for r in rows if r.get("impl") == "go" and r.get("openblas_core")}
    section = sample_section(m, rows, modes, [t for t in threads if t > 0], command, core)
    if splice_to:
        splice(splice_to, section)
        return
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
      "(so freed tensor memory is reused instead of page-faulted in again every step). **haswell** is matched with "
      "both forced to OpenBLAS's AVX2 Haswell kernels (training benchmarks only). **default** sets nothing: "
      "PyTorch runs as installed; gotorch-train applies both settings itself "
      f"(kernels used: {', '.join(f'{k}: {v}' for k, v in cores_go.items())}).\n")
    p("Times are wall clock; \"CPU\" is the process's CPU time per step (all threads), which other load on the "
      "machine disturbs less. gotorch-train's training steps are the fused steps (its default: hand-written "
      "forward and backward over buffers allocated once, the AdamW + EMA update applied as each gradient is "
      "ready); \"autograd path\" rows are the same trainer with `--train_step generic`. Floors are the matrix "
      "products of each side's step alone (gotorch-train: the fused step's 52 products replayed; PyTorch: forward "
      "and backward of every Linear, 54 products).\n")
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
            def step_row(label, gb, pb):
                a, b = g(gb, "go", "ms_per_step"), g(pb, "pytorch", "ms_per_step")
                ac, bc = g(gb, "go", "cpu_ms_per_step"), g(pb, "pytorch", "cpu_ms_per_step")
                if a and b:
                    cpu = f" (CPU {bc / ac:.2f}×)" if ac and bc else ""
                    ca = f"; CPU {ac:.1f} ms" if ac else ""
                    cb = f"; CPU {bc:.1f} ms" if bc else ""
                    p(f"| {label} | {t} | {1e3 / a:.2f} steps/s ({a:.1f} ms{ca}) | "
                      f"{1e3 / b:.2f} steps/s ({b:.1f} ms{cb}) | **{b / a:.2f}×**{cpu} |")

            def floor_row(label, gstep, gfloor, pstep, pfloor):
                a, fa = g(gstep, "go", "ms_per_step"), g(gfloor, "go", "ms_per_step")
                b, fb = g(pstep, "pytorch", "ms_per_step"), g(pfloor, "pytorch", "ms_per_step")
                ca, cfa = g(gstep, "go", "cpu_ms_per_step"), g(gfloor, "go", "cpu_ms_per_step")
                cells = []
                for st, fl, cst, cfl in ((a, fa, ca, cfa), (b, fb, None, None)):
                    if st and fl:
                        extra = f"; CPU {cst / cfl:.2f}×" if cst and cfl else ""
                        cells.append(f"{fl:.1f} ms; step = **{st / fl:.2f}×** the floor ({st - fl:.1f} ms beyond{extra})")
                    else:
                        cells.append("—")
                if a and fa:
                    p(f"| {label} | {t} | {cells[0]} | {cells[1]} | — |")

            step_row("Cell_Unet training step, batch 128", "step", "step")
            step_row("same, gotorch-train's autograd path (`--train_step generic`)", "step-generic", "step")
            a, b = g("step", "go", "train_peak_rss_mib"), g("step", "pytorch", "train_peak_rss_mib")
            if a and b:
                p(f"| Cell_Unet training peak RSS | {t} | {a:.0f} MiB | {b:.0f} MiB | **{a / b:.2f}×** of PyTorch's |")
            floor_row("GEMM-only floor of the step (forward + backward matrix products)", "step", "gemm", "step", "gemm")
            fa, ga_ = g("step", "go", "allocs_per_step"), g("step-generic", "go", "allocs_per_step")
            if fa is not None and ga_ is not None:
                p(f"| tensor allocations per step (tracked CPU allocator): fused / autograd path | {t} | "
                  f"{fa:.1f} / {ga_:.0f} ({g('step', 'go', 'transient_mib'):.1f} / {g('step-generic', 'go', 'transient_mib'):.1f} MiB transient) | — | — |")
            fo, go_ = g("step", "go", "kernels_per_step"), g("step-generic", "go", "kernels_per_step")
            if fo is not None and go_ is not None:
                p(f"| libtorch ops per training step (all / data kernels): fused / autograd path | {t} | "
                  f"{g('step', 'go', 'ops_per_step'):.0f} / {fo:.0f}; {g('step-generic', 'go', 'ops_per_step'):.0f} / {go_:.0f} | — | — |")
            step_row("Autoencoder training step, 2,000 genes, batch 128", "ae", "ae")
            step_row("same, gotorch-train's autograd path (`--train_step generic`)", "ae-generic", "ae")
            a, b = g("ae", "go", "train_peak_rss_mib"), g("ae", "pytorch", "train_peak_rss_mib")
            if a and b:
                p(f"| Autoencoder training peak RSS | {t} | {a:.0f} MiB | {b:.0f} MiB | **{a / b:.2f}×** of PyTorch's |")
            floor_row("GEMM-only floor of the autoencoder step", "ae", "ae-gemm", "ae", "ae-gemm")
        p("")
    targets(m, modes, threads)
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
    if section:
        p("")
        for line in section:
            p(line)
    p(f"\nRaw results: `{path}` (not committed).")


if __name__ == "__main__":
    main()
