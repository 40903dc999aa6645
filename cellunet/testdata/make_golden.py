#!/usr/bin/python3
"""Golden values for Cell_Unet parity tests (spec §1-§3), from the eager
PyTorch implementation in scripts/reference/scdiffusion_ref.py.

Run with Debian's python3-torch 1.13: `make fixtures`, or
    cd cellunet/testdata && /usr/bin/python3 make_golden.py
Writes:
  default_golden.safetensors  the default Cell_Unet after torch.manual_seed(0):
      key names/shapes (metadata), per-tensor sum and sum of squares (float64),
      a forward pass, float32-noise losses, gradients (per tensor Σx², Σ|x|,
      max|x| and the first 16 elements) and one AdamW step (lr 1e-4, wd 1e-4)
      on gradients drawn from torch.Generator seed 2, summarised the same way;
  small.pt                    a small Cell_Unet (16, [32,32,16,8]) state_dict
      written by torch.save, as a reference checkpoint would be;
  small_golden.safetensors    its forward pass on fixed inputs.
"""
import collections
import json
import sys

import numpy as np
import torch

sys.path.insert(0, "../../scripts/reference")
sys.path.insert(0, "../../cgotorch/testdata")
from make_golden import write_safetensors  # noqa: E402
from scdiffusion_ref import Cell_Unet, GaussianDiffusion, linear_betas  # noqa: E402


def summary(prefix, tensors, out):
    out[prefix + ".sum"] = torch.tensor([t.double().sum().item() for t in tensors], dtype=torch.float64)
    out[prefix + ".sumsq"] = torch.tensor([(t.double() ** 2).sum().item() for t in tensors], dtype=torch.float64)


def stats(prefix, named, out, head=16):
    """Per tensor: Σx², Σ|x|, max|x| (float64, the Summary of
    cgotorchtest) and the first `head` elements in full."""
    for k, t in named:
        d = t.detach().double()
        out[prefix + ".stats." + k] = torch.tensor([(d * d).sum(), d.abs().sum(), d.abs().max()], dtype=torch.float64)
        out[prefix + ".head." + k] = t.detach().reshape(-1)[:head].clone()


def default_golden():
    torch.manual_seed(0)
    model = Cell_Unet()
    sd = model.state_dict()
    out = collections.OrderedDict()
    summary("init", list(sd.values()), out)
    # Latents are unit vectors (std ~0.088 per coordinate).
    g = torch.Generator().manual_seed(1)
    x0 = torch.nn.functional.normalize(torch.randn(16, 128, generator=g), dim=1)
    t = torch.randint(0, 1000, (16,), generator=g)
    noise = torch.randn(16, 128, generator=g)
    out["x0"], out["t"], out["noise"] = x0, t, noise
    out["forward"] = model(x0, t).detach()
    diff = GaussianDiffusion(linear_betas(1000))
    out["x_t"] = diff.q_sample(x0, t, noise)
    losses = diff.training_losses(model, x0, t, noise)  # float32 noise: the [OURS] path
    out["losses"] = losses.detach()
    loss = losses.mean()
    loss.backward()
    named = list(model.named_parameters())
    stats("grad", [(k, p.grad) for k, p in named], out)
    out["grad.out2.bias"] = model.out2.bias.grad.clone()
    # One AdamW step on identical gradients: Adam's first update is ±lr
    # whatever a gradient's size, so an element whose gradient is at
    # rounding-noise level would move by the sign of that noise. The Go test
    # draws the same gradients from the same seeded generator, in parameter
    # order, instead of comparing the noise.
    gg = torch.Generator().manual_seed(2)
    for _, p in named:
        p.grad = torch.randn(p.shape, generator=gg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    opt.step()
    stats("step1", named, out)
    out["step1.out2.bias"] = model.out2.bias.detach().clone()
    out["step1.layers.0.norm.weight"] = model.layers[0].norm.weight.detach().clone()
    meta = {"keys": json.dumps([[k, list(v.shape)] for k, v in sd.items()]), "torch": torch.__version__}
    return out, meta


def small_golden():
    torch.manual_seed(3)
    model = Cell_Unet(16, [32, 32, 16, 8])
    torch.save(model.state_dict(), "small.pt")
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, 16, generator=g)
    t = torch.tensor([0, 1, 499, 500, 999])
    return collections.OrderedDict(x=x, t=t, forward=model(x, t).detach())


if __name__ == "__main__":
    torch.set_num_threads(1)
    out, meta = default_golden()
    write_safetensors("default_golden.safetensors", out, meta)
    write_safetensors("small_golden.safetensors", small_golden(), {"torch": torch.__version__})
    print("wrote default_golden.safetensors, small.pt, small_golden.safetensors")
