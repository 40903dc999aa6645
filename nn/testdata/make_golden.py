#!/usr/bin/python3
"""Golden values for the nn package's parity tests, from PyTorch.

Run with Debian's python3-torch (1.13): `make fixtures`, or
    cd nn/testdata && /usr/bin/python3 make_golden.py
Writes net_golden.safetensors (initial weights after torch.manual_seed(0),
a forward/backward pass in train and eval mode), net.pt (the same state dict
via torch.save) and mlp_golden.safetensors (the loss curve of 100 AdamW steps
of the 128-512-512-128 ReLU MLP of binding.md §9).
"""
import collections
import sys

import torch
import torch.nn as nn

sys.path.insert(0, "../../cgotorch/testdata")
from make_golden import write_safetensors  # noqa: E402


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
    y = net(x)  # train mode: batch statistics, running stats updated
    out["out_train"] = y.detach().clone()
    y.square().mean().backward()
    for k, p in net.named_parameters():
        out["grad." + k] = p.grad.clone()
    for k, v in net.state_dict().items():
        if "running" in k or "num_batches" in k:
            out["after." + k] = v.clone()
    net.eval()
    out["out_eval"] = net(x).detach().clone()
    return out


def mlp_golden(steps=100):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                        nn.Linear(512, 128))
    x, y = torch.randn(64, 128), torch.randn(64, 128)
    opt = torch.optim.AdamW(mlp.parameters(), lr=1e-3, weight_decay=1e-2)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(mlp(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # x and y are not stored: the Go test draws them from the same seeded stream.
    return collections.OrderedDict(x_head=x[:2].clone(), losses=torch.tensor(losses, dtype=torch.float64),
                                   final_w0_head=mlp[0].weight.detach()[:2].clone())


if __name__ == "__main__":
    torch.set_num_threads(1)
    write_safetensors("net_golden.safetensors", net_golden(), {"torch": torch.__version__})
    write_safetensors("mlp_golden.safetensors", mlp_golden(), {"torch": torch.__version__})
    print("wrote net_golden.safetensors, net.pt, mlp_golden.safetensors")
