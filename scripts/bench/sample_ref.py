#!/usr/bin/python3
"""PyTorch side of the sampling benchmark in scripts/bench.sh: the
reference's ancestral sampling loop (cell_sample.py → p_sample_loop with
Cell_Unet, FIXED_LARGE variance, noise weight 0.5, no clipping), from
scripts/reference/scdiffusion_ref.py, on Debian's python3-torch 1.13.

    sample_ref.py sample|gemm [--threads N] [--batch B] [--steps S] [--warmup W] [--model FILE]

sample: W warm-up steps, then S timed steps of the loop (steps W+S-1 .. 0
of a 1000-step schedule, so the timed part ends at t = 0), with the
default Cell_Unet after torch.manual_seed(0) (or --model, a state_dict).
gemm: only the matrix products of the same loop's forward passes (every
Linear at batch B, as the reference's forward computes them), S times.
Each prints one JSON object; peak RSS is ru_maxrss at the end.
"""
import argparse
import json
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from scdiffusion_ref import Cell_Unet, GaussianDiffusion, linear_betas  # noqa: E402


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_seconds():
    """User + system CPU time of the process: with one thread, the cost
    even when other processes share the cores."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def model(path):
    torch.manual_seed(0)
    m = Cell_Unet()
    if path:
        m.load_state_dict(torch.load(path, map_location="cpu"))
    return m.eval()


def bench_sample(a):
    m = model(a.model)
    diff = GaussianDiffusion(linear_betas(1000))
    marks = {}

    def progress(i):
        if i == a.steps:  # the warm-up steps are done
            marks["t0"], marks["c0"] = time.perf_counter(), cpu_seconds()
    torch.manual_seed(1234)
    sample, _ = diff.p_sample_loop(m, (a.batch, 128), clip_denoised=False, start_time=a.warmup + a.steps, progress=progress)
    el, cpu = time.perf_counter() - marks["t0"], cpu_seconds() - marks["c0"]
    return {"bench": "sample", "batch": a.batch, "steps": a.steps, "seconds": el, "ms_per_step": 1e3 * el / a.steps,
            "cells_steps_per_s": a.batch * a.steps / el, "cpu_seconds": cpu, "cpu_ms_per_step": 1e3 * cpu / a.steps,
            "finite": bool(torch.isfinite(sample).all()), "precision": "fp32"}


def bench_gemm(a):
    m = model(a.model)
    lins = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
    xs = [torch.randn(a.batch, mod.in_features) for mod in lins]
    with torch.no_grad():
        def once():
            for x, mod in zip(xs, lins):
                torch.addmm(mod.bias, x, mod.weight.t())
        for _ in range(a.warmup):
            once()
        t0, c0 = time.perf_counter(), cpu_seconds()
        for _ in range(a.steps):
            once()
        el, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return {"bench": "sample-gemm", "batch": a.batch, "steps": a.steps, "seconds": el, "ms_per_step": 1e3 * el / a.steps,
            "cpu_seconds": cpu, "cpu_ms_per_step": 1e3 * cpu / a.steps, "linears": len(lins), "forward": "full",
            "precision": "fp32"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bench")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1500)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--model", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.bench == "sample":
        out = bench_sample(a)
    elif a.bench == "gemm":
        out = bench_gemm(a)
    else:
        sys.exit("unknown benchmark " + a.bench)
    out.update(impl="pytorch", threads=a.threads, torch=torch.__version__, mode=os.environ.get("BENCH_MODE", ""),
               peak_rss_mib=peak_rss_mib())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
