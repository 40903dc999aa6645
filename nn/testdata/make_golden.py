#!/usr/bin/python3
"""Golden values for the nn package's parity tests, from PyTorch.

Run with Debian's python3-torch (1.13): `make fixtures`, or
    cd nn/testdata && /usr/bin/python3 make_golden.py
Writes net_golden.safetensors (initial weights after torch.manual_seed(0),
a forward/backward pass in train and eval mode), net.pt (the same state dict
via torch.save) and mlp_golden.safetensors (the first training step of the
128-512-512-128 ReLU MLP of binding.md §9, defined in mlp_reference.py).
"""
import collections
import sys

import torch
import torch.nn as nn

sys.path.insert(0, "../../cgotorch/testdata")
from make_golden import write_safetensors  # noqa: E402
from mlp_reference import mlp_and_data  # noqa: E402


class Net(nn.Module):
    """Every nn layer the Go package implements, in one module."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(128, 64)
        self.norm = nn.LayerNorm(64)
        self.bn = nn.BatchNorm1d(64)
        self.act = nn.PReLU()
        self.seq = nn.Sequential(nn.Linear(64, 32), nn.SiLU(), nn.Dropout(0.0), nn.ReLU(),
                                 nn.Linear(32, 8, bias=False))

    def forward(self, x):
        return self.seq(self.act(self.bn(self.norm(self.lin(x)))))


def net_golden():
    torch.manual_seed(0)
    net = Net()
    out = collections.OrderedDict()
    for k, v in net.state_dict().items():
        out["init." + k] = v.clone()
    torch.save(net.state_dict(), "net.pt")
    x = torch.randn(16, 128)
    out["x"] = x
    # The train-mode BatchNorm after the LayerNorm cancels the LayerNorm's
    # per-feature scale and shift, so their gradients are zero up to eps and
    # rounding: sums whose terms cancel. Record the magnitude of those terms,
    # Σ_rows |∂L/∂y·x̂| and Σ_rows |∂L/∂y| (y the LayerNorm's output, x̂ its
    # normalised input), which bounds the rounding ("gradterms.").
    ln_out = []

    def keep(module, inp, outp):
        outp.retain_grad()
        ln_out.append(outp)

    hook = net.norm.register_forward_hook(keep)
    y = net(x)  # train mode: batch statistics, running stats updated
    out["out_train"] = y.detach().clone()
    y.square().mean().backward()
    for k, p in net.named_parameters():
        out["grad." + k] = p.grad.clone()
    o = ln_out[0]
    xhat = (o - net.norm.bias) / net.norm.weight
    out["gradterms.norm.weight"] = (o.grad * xhat).abs().sum(0).detach()
    out["gradterms.norm.bias"] = o.grad.abs().sum(0)
    hook.remove()
    for k, v in net.state_dict().items():
        if "running" in k or "num_batches" in k:
            out["after." + k] = v.clone()
    net.eval()
    out["out_eval"] = net(x).detach().clone()
    return out


def mlp_golden():
    """The MLP's first training step: the loss and every gradient, which the
    mathematics fixes up to rounding (compared on any CPU under the rule in
    cgotorch/cgotorchtest/tolerance.go). Gradients of the weight matrices
    are stored as their first two rows plus per-tensor sum of squares, sum
    of magnitudes and largest magnitude (the whole file stays small); the
    biases in full. The 100-step trajectory is compared with a live
    reference instead (mlp_reference.py)."""
    mlp, x, y = mlp_and_data()
    loss = nn.functional.mse_loss(mlp(x), y)
    loss.backward()
    out = collections.OrderedDict(x_head=x[:2].clone(), loss=loss.detach().reshape(1))
    for k, p in mlp.named_parameters():
        g = p.grad.double()
        out["grad." + k] = p.grad.clone() if p.dim() == 1 else p.grad[:2].clone()
        out["grad_stats." + k] = torch.tensor([(g * g).sum(), g.abs().sum(), g.abs().max()], dtype=torch.float64)
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    write_safetensors("net_golden.safetensors", net_golden(), {"torch": torch.__version__})
    write_safetensors("mlp_golden.safetensors", mlp_golden(), {"torch": torch.__version__})
    print("wrote net_golden.safetensors, net.pt, mlp_golden.safetensors")
