#!/usr/bin/python3
"""PyTorch side of scripts/bench.sh: the same workloads as cmd/gotorch-bench,
in eager PyTorch (Debian's python3-torch 1.13 at /usr/bin/python3).

    ref_bench.py ops|mlp|step|gemm|ae [--threads N] [--steps N] [--warmup N] [--batch B] [--genes G]

--threads 0 leaves PyTorch's own default thread count (what a script that
never calls torch.set_num_threads gets); the output's "threads" says which.

Each prints one JSON object. `step` is the reference training step
(scripts/reference/scdiffusion_ref.py: float64 noise, uniform numpy sampler,
per-parameter norms, AdamW, EMA 0.9999, LR anneal); `gemm` times only the
matrix products of that step (forward and backward of every Linear); `ae`
is the autoencoder's VAE.train_step (scripts/reference/vae_ref.py) on
random cells × G genes. Times are wall clock (ms_per_step) and process CPU
time (cpu_ms_per_step, less disturbed by other load on the machine).
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from scdiffusion_ref import Cell_Unet, GaussianDiffusion, ReferenceTrainer, linear_betas  # noqa: E402
from vae_ref import VAE  # noqa: E402


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_ops():
    a, b = torch.ones(1), torch.full((1,), 2.0)
    n = 20000
    inplace, alloc = [], []
    for _ in range(15):
        t0 = time.perf_counter()
        for _ in range(n):
            a.add_(b)
        inplace.append((time.perf_counter() - t0) / n)
        t0 = time.perf_counter()
        for _ in range(n):
            r = a + b
            del r
        alloc.append((time.perf_counter() - t0) / n)
    return {"bench": "ops", "add_inplace_us": float(np.median(inplace) * 1e6), "add_free_us": float(np.median(alloc) * 1e6)}


def bench_mlp(warmup, steps):
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(128, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                              torch.nn.ReLU(), torch.nn.Linear(512, 128))
    x, y = torch.randn(64, 128), torch.randn(64, 128)
    opt = torch.optim.AdamW(mlp.parameters(), lr=1e-3, weight_decay=1e-2)
    first = last = None

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(mlp(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    for i in range(warmup):
        last = step()
        if i == 0:
            first = last
    t0 = time.perf_counter()
    for _ in range(steps):
        last = step()
    el = time.perf_counter() - t0
    return {"bench": "mlp", "steps_per_s": steps / el, "first_loss": first, "last_loss": last}


def data(device="cpu"):
    g = torch.Generator().manual_seed(99)
    return torch.nn.functional.normalize(torch.randn(4096, 128, generator=g), dim=1).to(device)


def sync(device):
    if device != "cpu":
        torch.cuda.synchronize()


def bench_step(warmup, steps, batch, device="cpu"):
    torch.manual_seed(1234)
    np.random.seed(1234)
    model = Cell_Unet().to(device)
    tr = ReferenceTrainer(model, GaussianDiffusion(linear_betas(1000)), lr_anneal_steps=warmup + steps)
    x = data(device)
    perm = torch.randperm(x.shape[0])
    pos = [0]

    def next_batch():
        if (pos[0] + 1) * batch > x.shape[0]:
            perm[:] = torch.randperm(x.shape[0])
            pos[0] = 0
        b = x[perm[pos[0] * batch:(pos[0] + 1) * batch]]
        pos[0] += 1
        return b

    for _ in range(warmup):
        tr.run_step(next_batch())
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        losses, _, _ = tr.run_step(next_batch())
    sync(device)
    el, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {"bench": "step", "batch": batch, "device": device, "steps_per_s": steps / el, "ms_per_step": 1e3 * el / steps,
           "cpu_ms_per_step": 1e3 * cpu / steps,
           "last_loss": float(losses[0]), "train_peak_rss_mib": peak_rss_mib()}
    if device != "cpu":
        out["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["cuda_peak_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    return out


def bench_gemm(warmup, steps, batch):
    """Forward and backward matrix products of every Linear of the default
    Cell_Unet at this batch: y = x W^T + b, dX = dY W, dW = dY^T X, db = sum."""
    torch.manual_seed(0)
    model = Cell_Unet()
    shapes = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    xs = [torch.randn(batch, i) for i, _ in shapes]
    ws = [torch.randn(o, i) for i, o in shapes]
    bs = [torch.randn(o) for _, o in shapes]
    gys = [torch.randn(batch, o) for _, o in shapes]

    def once():
        for x, w, b, gy in zip(xs, ws, bs, gys):
            torch.addmm(b, x, w.t())
            gy.mm(w)
            gy.t().mm(x)

    for _ in range(warmup):
        once()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        once()
    el, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"bench": "gemm", "batch": batch, "steps_per_s": steps / el, "ms_per_step": 1e3 * el / steps,
            "cpu_ms_per_step": 1e3 * cpu / steps, "linears": len(shapes)}


def bench_ae(warmup, steps, batch, genes):
    """VAE.train_step (MSE, torch.optim.AdamW 5e-4 / 0.01) on 1,024 random cells with 10 % non-zero
    log1p-like values, batches from a permutation as the reference's DataLoader draws them."""
    torch.manual_seed(1234)
    model = VAE(genes)
    opt = model.make_optimizer()
    g = torch.Generator().manual_seed(7)
    x = torch.log1p(torch.empty(1024, genes).exponential_(generator=g) * 5)
    x *= (torch.rand(1024, genes, generator=g) < 0.1)
    perm = torch.randperm(1024, generator=g)
    pos = [0]

    def next_batch():
        if (pos[0] + 1) * batch > x.shape[0]:
            perm[:] = torch.randperm(1024, generator=g)
            pos[0] = 0
        b = x[perm[pos[0] * batch:(pos[0] + 1) * batch]]
        pos[0] += 1
        return b

    for _ in range(warmup):
        model.train_step(next_batch(), opt)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        loss = model.train_step(next_batch(), opt)
    el, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"bench": "ae", "batch": batch, "genes": genes, "steps_per_s": steps / el, "ms_per_step": 1e3 * el / steps,
            "cpu_ms_per_step": 1e3 * cpu / steps, "last_loss": loss, "train_peak_rss_mib": peak_rss_mib()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bench")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads; 0: PyTorch's default")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--genes", type=int, default=2000)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if a.bench == "ops":
        out = bench_ops()
    elif a.bench == "mlp":
        out = bench_mlp(a.warmup, a.steps)
    elif a.bench == "step":
        out = bench_step(a.warmup, a.steps, a.batch, a.device)
    elif a.bench == "gemm":
        out = bench_gemm(a.warmup, a.steps, a.batch)
    elif a.bench == "ae":
        out = bench_ae(a.warmup, a.steps, a.batch, a.genes)
    else:
        sys.exit("unknown benchmark " + a.bench)
    out.update(impl="pytorch", threads=torch.get_num_threads(), torch=torch.__version__, mode=os.environ.get("BENCH_MODE", ""))
    out.setdefault("peak_rss_mib", peak_rss_mib())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
