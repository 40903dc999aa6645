#!/usr/bin/python3
"""Golden values for the autoencoder parity tests (spec §5), from the eager
PyTorch implementation in scripts/reference/vae_ref.py.

Run with Debian's python3-torch 1.13:
    cd cellunet/autoencoder/testdata && /usr/bin/python3 make_golden.py
Writes (all committed; the Go tests only read them):
  default_golden.safetensors  VAE(13431) after torch.manual_seed(0): state_dict
      key names and shapes (metadata "keys"), per-tensor sum and sum of squares
      (float64) of every state_dict entry, the parameter count;
  small.pt                    a small VAE (G=50, hidden [64,48,32], latent 16)
      with perturbed BN/PReLU values and non-trivial running statistics,
      written by torch.save as the reference writes its checkpoints;
  small_golden.safetensors    for a freshly seeded small VAE: init summaries,
      one train-mode forward (latent, reconstruction, loss, running stats),
      gradients (and, for the biases before a BatchNorm, the magnitudes of
      the terms their gradients sum), one AdamW step (lr 5e-4, wd 0.01) on
      those gradients; and for small.pt: the
      full-batch train-mode encode of all rows (the reference's semantics =
      our Dataset mode), eval-mode encode (Running mode), and decodes with
      and without reference latents.
"""
import collections
import copy
import json
import sys

import numpy as np
import torch

sys.path.insert(0, "../../../scripts/reference")
sys.path.insert(0, "../../../cgotorch/testdata")
from make_golden import write_safetensors  # noqa: E402
from vae_ref import VAE  # noqa: E402

G, HIDDEN, LATENT = 50, [64, 48, 32], 16
N = 150


def summary(prefix, tensors, out):
    out[prefix + ".sum"] = torch.tensor([t.double().sum().item() for t in tensors], dtype=torch.float64)
    out[prefix + ".sumsq"] = torch.tensor([(t.double() ** 2).sum().item() for t in tensors], dtype=torch.float64)


def keys_meta(sd):
    return json.dumps([[k, list(v.shape)] for k, v in sd.items()])


def default_golden():
    torch.manual_seed(0)
    model = VAE(13431)
    sd = model.state_dict()
    out = collections.OrderedDict()
    summary("init", list(sd.values()), out)
    out["num_params"] = torch.tensor([sum(p.numel() for p in model.parameters())], dtype=torch.int64)
    return out, {"keys": keys_meta(sd), "torch": torch.__version__}


def log1p_data(rng, n, g):
    """Sparse log1p-normalised expression: counts with many zeros, per-row
    total normalised to 1e4, natural log1p (spec §4)."""
    rates = rng.gamma(0.6, 2.0, size=(1, g)) * rng.gamma(2.0, 0.5, size=(n, 1))
    counts = rng.poisson(rates).astype(np.float64)
    counts[rng.random((n, g)) < 0.5] = 0
    counts[:, 0] += 1  # no empty rows
    x = np.log1p(counts * 1e4 / counts.sum(axis=1, keepdims=True))
    return torch.from_numpy(x.astype(np.float32))


def small_golden():
    out = collections.OrderedDict()
    rng = np.random.default_rng(7)
    X = log1p_data(rng, N, G)
    out["X"] = X

    # --- fresh model: init, one train-mode step.
    torch.manual_seed(1)
    m = VAE(G, HIDDEN, LATENT)
    sd = m.state_dict()
    summary("init", list(sd.values()), out)
    x = X[:32]
    # The bias of a Linear followed by train-mode BatchNorm has a zero
    # gradient in exact arithmetic: Σ_rows ∂L/∂a over the batch, which BN
    # makes cancel. Its rounding noise is bounded by the magnitude of those
    # terms, Σ_rows |∂L/∂a| per feature, recorded as "gradterms.<bias>".
    pre_bn = []
    for name, mod in m.named_modules():
        kids = list(mod.named_children())
        for (ln, lin), (_, bn) in zip(kids, kids[1:]):
            if isinstance(lin, torch.nn.Linear) and isinstance(bn, torch.nn.BatchNorm1d):
                def keep(module, inp, outp, key=f"{name}.{ln}.bias"):
                    outp.retain_grad()
                    pre_bn.append((key, outp))
                lin.register_forward_hook(keep)
    z = m(x, return_latent=True)
    recon = m.decoder(z)
    loss = m.loss_autoencoder(recon, x)
    out["train.z"], out["train.recon"], out["train.loss"] = z.detach(), recon.detach(), loss.detach().reshape(1)
    for k, v in m.state_dict().items():
        if "running" in k or "num_batches" in k:
            out["train.buf." + k] = v.clone()
    opt = m.make_optimizer()
    opt.zero_grad()
    loss.backward()
    for name, p in m.named_parameters():
        out["grad." + name] = p.grad.clone()
    for key, a in pre_bn:
        out["gradterms." + key] = a.grad.abs().sum(0)
    opt.step()
    for name, p in m.named_parameters():
        out["step1." + name] = p.detach().clone()

    # --- a "trained-looking" checkpoint: perturbed affine/PReLU values and
    # running statistics accumulated from a few batches.
    torch.manual_seed(2)
    m2 = VAE(G, HIDDEN, LATENT)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for mod in m2.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.weight.copy_(1 + 0.2 * torch.randn(mod.weight.shape, generator=g))
                mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=g))
            if isinstance(mod, torch.nn.PReLU):
                mod.weight.copy_(0.05 + 0.4 * torch.rand(1, generator=g))
        for i in range(3):
            idx = torch.randperm(N, generator=g)[:32]
            m2(X[idx])  # train mode: updates running stats of encoder and decoder
    m2.eval()
    torch.save(m2.state_dict(), "small.pt")

    # Dataset mode == the reference: one train-mode pass over ALL rows.
    ref = copy.deepcopy(m2).train()
    with torch.no_grad():
        zd = ref(X, return_latent=True)
    out["ds.z"] = zd
    # Running mode == eval mode.
    ev = copy.deepcopy(m2).eval()
    with torch.no_grad():
        zr = ev(X, return_latent=True)
        out["run.z"] = zr
        out["run.dec"] = ev(zr[:40], return_decoded=True)
        out["run.dec_raw"] = ev.decoder(zr[:40])
    # Decode in the reference's train mode: all requested latents in one
    # pass, optionally with reference latents appended (issue #5).
    L, R = zd[:40], zd[40:]
    out["dec.latents"], out["dec.ref"] = L, R
    d = copy.deepcopy(m2).train()
    with torch.no_grad():
        out["ds.dec"] = d(L, return_decoded=True)
        out["ds.dec_raw"] = d.decoder(L)
        out["ds.dec_union"] = d(torch.cat([L, R]), return_decoded=True)[:40]
    return out, {"keys": keys_meta(sd), "torch": torch.__version__}


if __name__ == "__main__":
    torch.set_num_threads(1)
    out, meta = default_golden()
    write_safetensors("default_golden.safetensors", out, meta)
    out, meta = small_golden()
    write_safetensors("small_golden.safetensors", out, meta)
    print("wrote default_golden.safetensors, small.pt, small_golden.safetensors")
