#!/usr/bin/python3
"""The 128-512-512-128 ReLU MLP of binding.md §9 trained with AdamW, in PyTorch.

Two uses:
  * make_golden.py imports it for the golden first step (mlp_golden.safetensors);
  * nn's TestMLPTrainingMatchesLivePyTorch runs it at test time, on the same
    machine, libtorch, OpenBLAS kernels and thread count as the Go test, as
        /usr/bin/python3 mlp_reference.py STEPS OUT.safetensors
    and compares the whole trajectory: a long training run amplifies the
    last-bit differences between CPUs and BLAS kernels, so its only fair
    reference is one computed here (cgotorchtest.LiveReference).
It writes OUT.safetensors with the per-step losses (float64) and every final
parameter under its state_dict name. The forward and backward passes are
PyTorch's modules and autograd; the update is libtorch's AdamW formula (see
class AdamW).
"""
import collections
import math
import os
import sys

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "cgotorch", "testdata"))
from make_golden import write_safetensors  # noqa: E402

ADAMW = dict(lr=1e-3, weight_decay=1e-2)


def mlp_and_data():
    """Seed 0; the MLP's initialisation, then x and y, drawn in this order
    (the Go test draws them from the same stream)."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                        nn.Linear(512, 128))
    x, y = torch.randn(64, 128), torch.randn(64, 128)
    return mlp, x, y


class AdamW:
    """AdamW as libtorch's torch::optim::AdamW::step computes it, operation
    for operation — the optimizer the Go side calls. torch 1.13's
    torch.optim.AdamW (single-tensor path) is the same sequence; 2.x's
    replaces mul_/add_ of the first moment by lerp_, which rounds
    differently, and a 100-step trajectory amplifies any such difference.
    Parity with torch.optim.AdamW itself is cgotorch's TestAdamWMatchesPyTorch."""

    def __init__(self, params, lr, weight_decay, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.wd, self.betas, self.eps = list(params), lr, weight_decay, betas, eps
        self.state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in self.params]
        self.step_count = 0

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        self.step_count += 1
        b1, b2 = self.betas
        for p, (m, v) in zip(self.params, self.state):
            p.mul_(1 - self.lr * self.wd)
            bc1 = 1 - b1 ** self.step_count
            bc2 = 1 - b2 ** self.step_count
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denom = (v.sqrt() / math.sqrt(bc2)).add_(self.eps)
            p.addcdiv_(m, denom, value=-(self.lr / bc1))


def train(steps):
    mlp, x, y = mlp_and_data()
    opt = AdamW(mlp.parameters(), **ADAMW)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(mlp(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    out = collections.OrderedDict(losses=torch.tensor(losses, dtype=torch.float64))
    for k, v in mlp.state_dict().items():
        out[k] = v
    return out


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("GOTORCH_TEST_THREADS", "1")))
    write_safetensors(sys.argv[2], train(int(sys.argv[1])), {"torch": torch.__version__})
