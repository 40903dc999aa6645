#!/usr/bin/python3
"""Golden values for the Cell_classifier parity tests (spec §6), from the
eager PyTorch implementation in scripts/reference/scdiffusion_ref.py.

Run with Debian's python3-torch 1.13: `make fixtures`, or
    cd cellunet/classifier/testdata && /usr/bin/python3 make_golden.py
Writes:
  default_golden.safetensors  Cell_classifier(128, [512,512,256,128], 12,
      dropout 0.1) after torch.manual_seed(0): key names/shapes (metadata),
      per-tensor sum and sum of squares of the state_dict (float64); on fixed
      noised latents: eval-mode logits; train-mode logits with the dropout
      masks drawn after torch.manual_seed(5); and with dropout 0, the
      forward and backward of one training step of classifier_train.py
      (cross-entropy mean): logits, loss, per-tensor gradient summaries
      (Σg², Σ|g|, max|g|) and first elements; the gradients of the biases
      added before a train-mode BatchNorm (zero in exact arithmetic: the
      batch mean removes them) in full with their scale Σ_b |∂L/∂h_b| per
      element (cgotorchtest/tolerance.go); the BatchNorm running statistics
      the step leaves; then, with those running
      statistics, the guidance gradient s·∇_x Σ log softmax(logits)[y] in
      eval mode (s = 2). (No optimizer step: AdamW's first update is about
      lr·sign(g), so elements whose gradient is ~0 flip between BLAS
      kernels; the optimizer is checked elsewhere.)
  small.pt                    a small classifier (16, [32,32,16,8], 5 classes)
      state_dict written by torch.save after a few train-mode forwards (so
      the running statistics are not the defaults), as a reference checkpoint;
  small_golden.safetensors    its eval-mode logits on fixed inputs.
"""
import collections
import json
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "scripts", "reference"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "cgotorch", "testdata"))
from make_golden import write_safetensors  # noqa: E402
from scdiffusion_ref import Cell_classifier, GaussianDiffusion, linear_betas  # noqa: E402


def summary(prefix, tensors, out):
    """Per-tensor sum and sum of squares; a missing gradient (None: the unused
    emb_layers3) counts as zeros."""
    tensors = [torch.zeros(1) if t is None else t for t in tensors]
    out[prefix + ".sum"] = torch.tensor([t.double().sum().item() for t in tensors], dtype=torch.float64)
    out[prefix + ".sumsq"] = torch.tensor([(t.double() ** 2).sum().item() for t in tensors], dtype=torch.float64)


def stats(prefix, named, out, head=16):
    """Per tensor: Σx², Σ|x|, max|x| (float64, the Summary of cgotorchtest)
    and the first `head` elements in full; a missing gradient (None: the
    unused emb_layers3) counts as zeros."""
    for k, t in named:
        if t is None:
            t = torch.zeros(1)
        d = t.detach().double()
        out[prefix + ".stats." + k] = torch.tensor([(d * d).sum(), d.abs().sum(), d.abs().max()], dtype=torch.float64)
        out[prefix + ".head." + k] = t.detach().reshape(-1)[:head].clone()


# The biases added to the input of a train-mode BatchNorm (through fc_i or
# emb_layers_i), keyed by that BatchNorm.
PRE_BN_BIASES = {"norm1": ["fc1.bias", "emb_layers1.1.bias"],
                 "norm2": ["fc2.bias", "emb_layers2.1.bias"],
                 "norm3": ["fc3.bias"]}


def inputs(n=16, d=128, seed=1):
    g = torch.Generator().manual_seed(seed)
    x0 = F.normalize(torch.randn(n, d, generator=g), dim=1)
    t = torch.randint(0, 500, (n,), generator=g)
    noise = torch.randn(n, d, generator=g)
    y = torch.randint(0, 12, (n,), generator=g)
    return x0, t, noise, y


def default_golden():
    torch.manual_seed(0)
    model = Cell_classifier(128, [512, 512, 256, 128], num_class=12, dropout=0.1)
    sd = model.state_dict()
    initial = {k: v.clone() for k, v in sd.items()}
    out = collections.OrderedDict()
    summary("init", list(initial.values()), out)
    x0, t, noise, y = inputs()
    diff = GaussianDiffusion(linear_betas(1000))
    x_t = diff.q_sample(x0, t, noise).float()
    out["x_t"], out["t"], out["y"] = x_t, t, y

    model.eval()
    out["eval_logits"] = model(x_t, t).detach()
    model.train()
    torch.manual_seed(5)
    out["train_dropout_logits"] = model(x_t, t).detach()
    # The dropout forward above moved the running statistics; start the step
    # from the initial state again.
    model.load_state_dict(initial)
    model.drop.p = 0.0
    model.train()
    bn_inputs = {}

    def keep_input(name):
        def hook(_module, args):
            args[0].retain_grad()
            bn_inputs[name] = args[0]
        return hook

    hooks = [getattr(model, n).register_forward_pre_hook(keep_input(n)) for n in PRE_BN_BIASES]
    logits = model(x_t, t)
    for h in hooks:
        h.remove()
    loss = F.cross_entropy(logits, y)  # mean, as classifier_train.py (one microbatch)
    out["train_logits"] = logits.detach()
    out["loss"] = loss.detach().reshape(1)
    loss.backward()
    params = dict(model.named_parameters())
    stats("grad", [(k, p.grad) for k, p in params.items()], out)
    for bn, biases in PRE_BN_BIASES.items():
        # ∂L/∂bias_j = Σ_b ∂L/∂h_bj, whose terms cancel to 0.
        scale = bn_inputs[bn].grad.double().abs().sum(0)
        for k in biases:
            out["grad.full." + k] = params[k].grad.detach().clone()
            out["grad.scale." + k] = scale
    after = model.state_dict()
    for k in ("norm1.running_mean", "norm2.running_var", "norm3.running_var", "norm3.num_batches_tracked"):
        out["after." + k] = after[k].clone()

    model.eval()
    x_in = x_t.detach().requires_grad_(True)
    selected = F.log_softmax(model(x_in, t), dim=-1)[range(len(y)), y.view(-1)]
    out["guidance_grad"] = torch.autograd.grad(selected.sum(), x_in)[0] * 2.0
    meta = {"keys": json.dumps([[k, list(v.shape)] for k, v in sd.items()]), "torch": torch.__version__}
    return out, meta


def small_golden():
    torch.manual_seed(3)
    model = Cell_classifier(16, [32, 32, 16, 8], num_class=5, dropout=0.1)
    g = torch.Generator().manual_seed(4)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(12, 16, generator=g), torch.randint(0, 500, (12,), generator=g))
    torch.save(model.state_dict(), "small.pt")
    model.eval()
    x = torch.randn(5, 16, generator=g)
    t = torch.tensor([0, 1, 250, 499, 999])
    return collections.OrderedDict(x=x, t=t, eval_logits=model(x, t).detach())


if __name__ == "__main__":
    torch.set_num_threads(1)
    out, meta = default_golden()
    write_safetensors("default_golden.safetensors", out, meta)
    write_safetensors("small_golden.safetensors", small_golden(), {"torch": torch.__version__})
    print("wrote default_golden.safetensors, small.pt, small_golden.safetensors")
