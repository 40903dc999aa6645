#!/usr/bin/python3
"""Golden values for cgotorch's parity tests, computed by PyTorch.

Run with Debian's python3-torch (1.13): `make fixtures` or
    cd cgotorch/testdata && /usr/bin/python3 make_golden.py
It writes ops_golden.safetensors (inputs, outputs and gradients of every op
the binding exposes), adamw_golden.safetensors (three AdamW steps) and
state_dict.pt (a torch.save'd state_dict for the .pt loader test). The files
are committed; the Go tests only read them.

The safetensors files are written by the small writer below (the format is
8-byte header length + JSON header + raw little-endian data), because
Debian 12 does not package Python's safetensors.
"""
import collections
import json
import struct

import numpy as np
import torch
import torch.nn.functional as F

DT = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16",
      torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32",
      torch.uint8: "U8", torch.bool: "BOOL"}


def write_safetensors(path, tensors, metadata=None):
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        if t.dtype == torch.bfloat16:
            raw = t.view(torch.int16).numpy().tobytes()
        else:
            raw = t.numpy().tobytes()
        header[name] = {"dtype": DT[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    js = json.dumps(header, separators=(",", ":")).encode()
    js += b" " * ((8 - len(js) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(js)))
        f.write(js)
        for b in blobs:
            f.write(b)


def ops_golden():
    torch.manual_seed(0)
    out = collections.OrderedDict()
    inp = {
        "x": torch.randn(4, 6),
        "y": torch.randn(4, 6),
        "pos": torch.rand(4, 6) + 0.5,
        "w": torch.randn(5, 6),
        "b": torch.randn(5),
        "lnw": torch.randn(6),
        "lnb": torch.randn(6),
        "bnx": torch.randn(8, 6) * 2 + 1,
        "bnw": torch.randn(6),
        "bnb": torch.randn(6),
        "prelu1": torch.tensor([0.25]),
        "prelu6": torch.rand(6),
        "cls": torch.tensor([0, 5, 2, 3]),
        "idx": torch.tensor([3, 0, 2]),
        "gidx": torch.randint(0, 6, (4, 6)),
        "cond": torch.rand(4, 6) > 0.5,
        "special": torch.tensor([1.0, float("inf"), -float("inf"), float("nan"), 0.0, -1.0]),
        "m": torch.randn(6, 3),
        "b3": torch.randn(2, 4, 6),
    }
    for k, v in inp.items():
        out["in." + k] = v

    # name -> (function of the input dict, names of inputs to differentiate)
    ops = collections.OrderedDict([
        ("neg", (lambda d: -d["x"], ["x"])),
        ("exp", (lambda d: torch.exp(d["x"]), ["x"])),
        ("log", (lambda d: torch.log(d["pos"]), ["pos"])),
        ("log1p", (lambda d: torch.log1p(d["pos"]), [])),
        ("expm1", (lambda d: torch.expm1(d["x"]), [])),
        ("sqrt", (lambda d: torch.sqrt(d["pos"]), ["pos"])),
        ("rsqrt", (lambda d: torch.rsqrt(d["pos"]), [])),
        ("sin", (lambda d: torch.sin(d["x"]), ["x"])),
        ("cos", (lambda d: torch.cos(d["x"]), ["x"])),
        ("abs", (lambda d: torch.abs(d["x"]), [])),
        ("silu", (lambda d: F.silu(d["x"]), ["x"])),
        ("relu", (lambda d: F.relu(d["x"]), ["x"])),
        ("sigmoid", (lambda d: torch.sigmoid(d["x"]), [])),
        ("tanh", (lambda d: torch.tanh(d["x"]), [])),
        ("square", (lambda d: torch.square(d["x"]), [])),
        ("reciprocal", (lambda d: torch.reciprocal(d["pos"]), [])),
        ("gelu", (lambda d: F.gelu(d["x"]), [])),
        ("add", (lambda d: d["x"] + d["y"], ["x", "y"])),
        ("sub", (lambda d: d["x"] - d["y"], ["x", "y"])),
        ("mul", (lambda d: d["x"] * d["y"], ["x", "y"])),
        ("div", (lambda d: d["x"] / d["pos"], ["x", "pos"])),
        ("pow", (lambda d: torch.pow(d["pos"], d["x"]), ["pos", "x"])),
        ("maximum", (lambda d: torch.maximum(d["x"], d["y"]), [])),
        ("minimum", (lambda d: torch.minimum(d["x"], d["y"]), [])),
        ("add_scaled", (lambda d: torch.add(d["x"], d["y"], alpha=0.3), [])),
        ("add_s", (lambda d: d["x"] + 1.5, [])),
        ("sub_s", (lambda d: d["x"] - 1.5, [])),
        ("mul_s", (lambda d: d["x"] * 1.5, [])),
        ("div_s", (lambda d: d["x"] / 1.5, [])),
        ("pow_s", (lambda d: d["pos"] ** 1.5, ["pos"])),
        ("rsub_s", (lambda d: 1.5 - d["x"], [])),
        ("rdiv_s", (lambda d: 1.5 / d["pos"], [])),
        ("clamp", (lambda d: torch.clamp(d["x"], -0.5, 0.7), ["x"])),
        ("clamp_min", (lambda d: torch.clamp(d["x"], min=-0.5), [])),
        ("where", (lambda d: torch.where(d["cond"], d["x"], d["y"]), [])),
        ("sum", (lambda d: d["x"].sum(), ["x"])),
        ("mean", (lambda d: d["x"].mean(), ["x"])),
        ("sum_d1", (lambda d: d["x"].sum(1), [])),
        ("mean_d0k", (lambda d: d["x"].mean(0, keepdim=True), [])),
        ("amax_d1", (lambda d: d["x"].amax(1), [])),
        ("amin_d1", (lambda d: d["x"].amin(1), [])),
        ("var_d1", (lambda d: d["x"].var(1), [])),
        ("var_biased_d1", (lambda d: d["x"].var(1, unbiased=False), [])),
        ("var_all", (lambda d: d["x"].var(), [])),
        ("norm_all", (lambda d: d["x"].norm(), [])),
        ("norm_d1", (lambda d: d["x"].norm(dim=1), [])),
        ("max_all", (lambda d: d["x"].max(), [])),
        ("argmax_d1", (lambda d: d["x"].argmax(1), [])),
        ("cumsum_d1", (lambda d: d["x"].cumsum(1), [])),
        ("view", (lambda d: d["x"].view(6, 4), [])),
        ("reshape", (lambda d: d["x"].t().reshape(-1), [])),
        ("unsqueeze", (lambda d: d["x"].unsqueeze(1), [])),
        ("transpose", (lambda d: d["x"].transpose(0, 1).contiguous(), [])),
        ("permute", (lambda d: d["b3"].permute(2, 0, 1).contiguous(), [])),
        ("expand", (lambda d: d["b"].unsqueeze(0).expand(3, 5).contiguous(), [])),
        ("narrow", (lambda d: d["x"].narrow(1, 2, 3).contiguous(), ["x"])),
        ("index_select", (lambda d: d["x"].index_select(1, d["idx"]), ["x"])),
        ("gather", (lambda d: d["x"].gather(1, d["gidx"]), ["x"])),
        ("cat", (lambda d: torch.cat([d["x"], d["y"]], 0), [])),
        ("stack", (lambda d: torch.stack([d["x"], d["y"]], 1), [])),
        ("matmul", (lambda d: d["x"] @ d["m"], ["x", "m"])),
        ("linear", (lambda d: F.linear(d["x"], d["w"], d["b"]), ["x", "w", "b"])),
        ("linear_nobias", (lambda d: F.linear(d["x"], d["w"]), [])),
        ("linear3d", (lambda d: F.linear(d["b3"], d["w"], d["b"]), [])),
        ("layer_norm", (lambda d: F.layer_norm(d["x"], [6], d["lnw"], d["lnb"], 1e-5), ["x", "lnw", "lnb"])),
        ("layer_norm_noaffine", (lambda d: F.layer_norm(d["x"], [6], None, None, 1e-5), [])),
        ("prelu1", (lambda d: F.prelu(d["x"], d["prelu1"]), ["x", "prelu1"])),
        ("prelu6", (lambda d: F.prelu(d["x"], d["prelu6"]), ["x", "prelu6"])),
        ("softmax", (lambda d: F.softmax(d["x"], 1), ["x"])),
        ("log_softmax", (lambda d: F.log_softmax(d["x"], 1), ["x"])),
        ("normalize", (lambda d: F.normalize(d["x"], p=2.0, dim=1, eps=1e-12), ["x"])),
        ("mse_mean", (lambda d: F.mse_loss(d["x"], d["y"]), ["x"])),
        ("mse_sum", (lambda d: F.mse_loss(d["x"], d["y"], reduction="sum"), [])),
        ("mse_none", (lambda d: F.mse_loss(d["x"], d["y"], reduction="none"), [])),
        ("ce_mean", (lambda d: F.cross_entropy(d["x"], d["cls"]), ["x"])),
        ("ce_none", (lambda d: F.cross_entropy(d["x"], d["cls"], reduction="none"), [])),
        ("isfinite", (lambda d: torch.isfinite(d["special"]), [])),
        ("isnan", (lambda d: torch.isnan(d["special"]), [])),
        ("to_f64", (lambda d: d["x"].double(), [])),
        ("to_f16", (lambda d: d["x"].half(), [])),
        ("to_bf16", (lambda d: d["x"].bfloat16(), [])),
        ("to_i64", (lambda d: (d["x"] * 10).long(), [])),
        ("bn_eval", (lambda d: F.batch_norm(d["bnx"], torch.full((6,), 0.5), torch.full((6,), 2.0),
                                            d["bnw"], d["bnb"], False, 0.1, 1e-5), ["bnx"])),
    ])
    for name, (fn, wrt) in ops.items():
        d = {k: v.clone().requires_grad_(k in wrt) for k, v in inp.items()}
        r = fn(d)
        out[name + ".out"] = r
        if wrt:
            g = torch.randn(r.shape)
            out[name + ".gout"] = g
            (r * g).sum().backward()
            for k in wrt:
                out[name + ".grad." + k] = d[k].grad

    # Batch norm in training mode: output, gradients and updated running stats.
    d = {k: v.clone().requires_grad_(k in ("bnx", "bnw", "bnb")) for k, v in inp.items()}
    rm, rv = torch.zeros(6), torch.ones(6)
    r = F.batch_norm(d["bnx"], rm, rv, d["bnw"], d["bnb"], True, 0.1, 1e-5)
    g = torch.randn(r.shape)
    (r * g).sum().backward()
    out["bn_train.out"] = r
    out["bn_train.gout"] = g
    for k in ("bnx", "bnw", "bnb"):
        out["bn_train.grad." + k] = d[k].grad
    out["bn_train.running_mean"] = rm
    out["bn_train.running_var"] = rv

    # Random streams: the default generator after manual_seed, and a private one.
    torch.manual_seed(42)
    out["rand.randn"] = torch.randn(3, 4)
    out["rand.rand"] = torch.rand(3, 4)
    out["rand.randint"] = torch.randint(0, 10, (5,))
    out["rand.randperm"] = torch.randperm(7)
    out["rand.uniform"] = torch.empty(5).uniform_(-1, 2)
    out["rand.normal"] = torch.empty(5).normal_(1, 2)
    out["rand.dropout"] = F.dropout(torch.ones(4, 8), 0.5, True)
    gen = torch.Generator().manual_seed(7)
    out["rand.gen_randn"] = torch.randn(6, generator=gen)
    return out


def adamw_golden():
    """Three AdamW steps over two parameters with fixed gradients."""
    torch.manual_seed(1)
    p0, p1 = torch.randn(5, 6), torch.randn(5)
    grads = [(torch.randn(5, 6), torch.randn(5)) for _ in range(3)]
    out = collections.OrderedDict(p0=p0.clone(), p1=p1.clone())
    a, b = p0.clone().requires_grad_(), p1.clone().requires_grad_()
    opt = torch.optim.AdamW([a, b], lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05)
    ema0, ema1 = p0.clone(), p1.clone()
    for k, (g0, g1) in enumerate(grads):
        out[f"g{k}.0"], out[f"g{k}.1"] = g0, g1
        a.grad, b.grad = g0.clone(), g1.clone()
        opt.step()
        with torch.no_grad():
            ema0.mul_(0.9).add_(a, alpha=0.1)
            ema1.mul_(0.9).add_(b, alpha=0.1)
        out[f"step{k}.0"], out[f"step{k}.1"] = a.detach().clone(), b.detach().clone()
        out[f"ema{k}.0"], out[f"ema{k}.1"] = ema0.clone(), ema1.clone()
    st = opt.state_dict()["state"]
    out["final.exp_avg.0"] = st[0]["exp_avg"]
    out["final.exp_avg_sq.0"] = st[0]["exp_avg_sq"]
    return out


def state_dict_pt():
    """A small module's state_dict saved with torch.save (zip format), plus a
    non-contiguous tensor and a nested dictionary, for the .pt loader."""
    torch.manual_seed(3)
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.PReLU())
    sd = m.state_dict()
    torch.save(sd, "state_dict.pt")
    extra = {"state_dict": sd, "strided": torch.arange(12.0).view(3, 4).t(), "half": torch.tensor([1.5, -2.0]).half(),
             "step": 7}
    torch.save(extra, "nested.pt")
    flat = collections.OrderedDict()
    for k, v in sd.items():
        flat[k] = v
    flat["strided"] = extra["strided"].contiguous()
    flat["half"] = extra["half"]
    write_safetensors("state_dict_expected.safetensors", flat)


def unknown_object_pt():
    """A checkpoint whose "s" is an object the .pt reader does not interpret
    (a storage): loading it must fail naming "s", not drop it."""
    t = torch.arange(4.0)
    torch.save({"w": t, "s": t.storage()}, "unknown_object.pt")


if __name__ == "__main__":
    write_safetensors("ops_golden.safetensors", ops_golden(), {"torch": torch.__version__})
    write_safetensors("adamw_golden.safetensors", adamw_golden(), {"torch": torch.__version__})
    state_dict_pt()
    unknown_object_pt()
    print("wrote ops_golden.safetensors, adamw_golden.safetensors, state_dict.pt, nested.pt, unknown_object.pt")
