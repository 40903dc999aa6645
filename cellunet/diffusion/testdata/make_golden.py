#!/usr/bin/python3
"""Golden values for the reverse-process tests of package diffusion.

Run with Debian's python3-torch (1.13):
    cd cellunet/diffusion/testdata && /usr/bin/python3 make_golden.py
It writes golden.safetensors: the weights of a small Cell_Unet
(input 16, hidden [32,32,16,8]) and of two toy classifiers, the inputs, and
PyTorch's outputs of p_mean_variance, p_sample, condition_mean,
condition_score, ddim_sample, ddim_reverse_sample, space_timesteps, a
respaced schedule, the bits-per-dim helpers and calc_bpd_loop, plus two
10-step sampling loops driven by seeded generators. The file is committed;
the Go tests only read it. The 1000-step loop is run at test time instead
(loop_reference.py imports this file).

The model is scripts/reference/scdiffusion_ref.py's Cell_Unet (imported, not
copied). The diffusion code below follows guided-diffusion's
gaussian_diffusion.py, respace.py and losses.py as described in
shared/spec/scdiffusion.md §2 and §6, with two deliberate differences that
are ours, not the reference's ([OURS] in the spec):
  * every random draw comes from an explicit torch.Generator (the reference
    uses the global one through randn_like), so Go can replay the stream;
  * in the sampling loops, guidance is gated on the model's (original) step
    number, t_model < start_guide_steps; the reference compares the respaced
    index, which is the same thing without respacing.
"""
import collections
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "scripts", "reference"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "cgotorch", "testdata"))
import scdiffusion_ref as ref  # noqa: E402
from make_golden import write_safetensors  # noqa: E402  (cgotorch's fixture writer)



# ------------------------------------------------ respace.py: space_timesteps

def space_timesteps(num_timesteps, section_counts):
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired_count = int(section_counts[len("ddim"):])
            for i in range(1, num_timesteps):
                if len(range(0, num_timesteps, i)) == desired_count:
                    return set(range(0, num_timesteps, i))
            raise ValueError(f"cannot create exactly {num_timesteps} steps with an integer stride")
        section_counts = [int(x) for x in section_counts.split(",")]
    size_per = num_timesteps // len(section_counts)
    extra = num_timesteps % len(section_counts)
    start_idx = 0
    all_steps = []
    for i, section_count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < section_count:
            raise ValueError(f"cannot divide section of {size} steps into {section_count}")
        if section_count <= 1:
            frac_stride = 1
        else:
            frac_stride = (size - 1) / (section_count - 1)
        cur_idx = 0.0
        taken_steps = []
        for _ in range(section_count):
            taken_steps.append(start_idx + round(cur_idx))
            cur_idx += frac_stride
        all_steps += taken_steps
        start_idx += size
    return set(all_steps)


# ------------------------------------------- losses.py / nn.py helpers

def normal_kl(mean1, logvar1, mean2, logvar2):
    tensor = None
    for obj in (mean1, logvar1, mean2, logvar2):
        if isinstance(obj, torch.Tensor):
            tensor = obj
            break
    logvar1, logvar2 = [x if isinstance(x, torch.Tensor) else torch.tensor(x).to(tensor)
                        for x in (logvar1, logvar2)]
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + ((mean1 - mean2) ** 2) * torch.exp(-logvar2))


def approx_standard_normal_cdf(x):
    return 0.5 * (1.0 + torch.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * torch.pow(x, 3))))


def discretized_gaussian_log_likelihood(x, *, means, log_scales):
    assert x.shape == means.shape == log_scales.shape
    centered_x = x - means
    inv_stdv = torch.exp(-log_scales)
    plus_in = inv_stdv * (centered_x + 1.0 / 255.0)
    cdf_plus = approx_standard_normal_cdf(plus_in)
    min_in = inv_stdv * (centered_x - 1.0 / 255.0)
    cdf_min = approx_standard_normal_cdf(min_in)
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    log_probs = torch.where(
        x < -0.999, log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))))
    assert log_probs.shape == x.shape
    return log_probs


def mean_flat(t):
    return t.mean(dim=list(range(1, len(t.shape))))


# ------------------------------------- gaussian_diffusion.py (ε-prediction)

def extract(arr, timesteps, broadcast_shape):
    res = torch.from_numpy(arr).to(device=timesteps.device)[timesteps].float()
    while len(res.shape) < len(broadcast_shape):
        res = res[..., None]
    return res.expand(broadcast_shape)


class Diffusion:
    """GaussianDiffusion with SpacedDiffusion's timestep map folded in."""

    def __init__(self, use_timesteps=None, T=1000, var_type="large"):
        base = ref.linear_betas(T)
        if use_timesteps is None:
            use_timesteps = set(range(T))
        base_cum = np.cumprod(1.0 - base, axis=0)
        last, new_betas, tmap = 1.0, [], []
        for i, ac in enumerate(base_cum):
            if i in use_timesteps:
                new_betas.append(1 - ac / last)
                last = ac
                tmap.append(i)
        self.timestep_map = tmap
        betas = np.array(new_betas, dtype=np.float64)
        self.var_type = var_type
        self.betas = betas
        self.num_timesteps = len(betas)
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas, axis=0)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_log_variance_clipped = np.log(
            np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = ((1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas)
                                     / (1.0 - self.alphas_cumprod))

    def map_t(self, t):
        return torch.tensor(self.timestep_map, dtype=t.dtype)[t]

    def q_sample(self, x_start, t, noise):
        return (extract(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
                + extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise)

    def q_mean_variance(self, x_start, t):
        mean = extract(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
        variance = extract(1.0 - self.alphas_cumprod, t, x_start.shape)
        log_variance = extract(self.log_one_minus_alphas_cumprod, t, x_start.shape)
        return mean, variance, log_variance

    def q_posterior_mean_variance(self, x_start, x_t, t):
        mean = (extract(self.posterior_mean_coef1, t, x_t.shape) * x_start
                + extract(self.posterior_mean_coef2, t, x_t.shape) * x_t)
        var = extract(self.posterior_variance, t, x_t.shape)
        logvar = extract(self.posterior_log_variance_clipped, t, x_t.shape)
        return mean, var, logvar

    def predict_xstart_from_eps(self, x_t, t, eps):
        return (extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
                - extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * eps)

    def predict_eps_from_xstart(self, x_t, t, pred_xstart):
        return ((extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - pred_xstart)
                / extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape))

    def model_variance(self):
        if self.var_type == "large":
            v = np.append(self.posterior_variance[1], self.betas[1:])
            return v, np.log(v)
        return self.posterior_variance, self.posterior_log_variance_clipped

    def p_mean_variance(self, model, x, t, clip_denoised):
        model_output = model(x, self.map_t(t))
        mv, mlv = self.model_variance()
        model_variance = extract(mv, t, x.shape)
        model_log_variance = extract(mlv, t, x.shape)
        pred_xstart = self.predict_xstart_from_eps(x, t, model_output)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        model_mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {"mean": model_mean, "variance": model_variance, "log_variance": model_log_variance,
                "pred_xstart": pred_xstart, "eps": model_output}

    def condition_mean(self, cond_fn, out, x, t):
        gradient = cond_fn(x, self.map_t(t))
        return out["mean"].float() + out["variance"] * gradient.float()

    def condition_score(self, cond_fn, out, x, t):
        alpha_bar = extract(self.alphas_cumprod, t, x.shape)
        eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])
        eps = eps - (1 - alpha_bar).sqrt() * cond_fn(x, self.map_t(t))
        out = dict(out)
        out["pred_xstart"] = self.predict_xstart_from_eps(x, t, eps)
        out["mean"], _, _ = self.q_posterior_mean_variance(out["pred_xstart"], x, t)
        return out

    def p_sample(self, model, x, t, noise, clip_denoised=False, cond_fn=None):
        out = self.p_mean_variance(model, x, t, clip_denoised)
        nonzero_mask = (t != 0).float().view(-1, *([1] * (len(x.shape) - 1)))
        if cond_fn is not None:
            out["mean"] = self.condition_mean(cond_fn, out, x, t)
        sample = out["mean"] + nonzero_mask * torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def ddim_sample(self, model, x, t, noise, clip_denoised=False, cond_fn=None, eta=0.0):
        out = self.p_mean_variance(model, x, t, clip_denoised)
        if cond_fn is not None:
            out = self.condition_score(cond_fn, out, x, t)
        eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])
        alpha_bar = extract(self.alphas_cumprod, t, x.shape)
        alpha_bar_prev = extract(self.alphas_cumprod_prev, t, x.shape)
        sigma = (eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar))
                 * torch.sqrt(1 - alpha_bar / alpha_bar_prev))
        mean_pred = (out["pred_xstart"] * torch.sqrt(alpha_bar_prev)
                     + torch.sqrt(1 - alpha_bar_prev - sigma ** 2) * eps)
        nonzero_mask = (t != 0).float().view(-1, *([1] * (len(x.shape) - 1)))
        sample = mean_pred + nonzero_mask * sigma * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def ddim_reverse_sample(self, model, x, t, clip_denoised=False):
        out = self.p_mean_variance(model, x, t, clip_denoised)
        eps = ((extract(self.sqrt_recip_alphas_cumprod, t, x.shape) * x - out["pred_xstart"])
               / extract(self.sqrt_recipm1_alphas_cumprod, t, x.shape))
        alpha_bar_next = extract(self.alphas_cumprod_next, t, x.shape)
        mean_pred = out["pred_xstart"] * torch.sqrt(alpha_bar_next) + torch.sqrt(1 - alpha_bar_next) * eps
        return {"sample": mean_pred, "pred_xstart": out["pred_xstart"]}

    # Loops: one explicit generator; guidance gated on the model step ([OURS]).
    def p_sample_loop(self, model, shape, gen, clip_denoised=False, cond_fn=None,
                      start_guide_steps=500, start_time=None):
        img = torch.randn(*shape, generator=gen)
        n = self.num_timesteps if start_time is None else start_time
        with torch.no_grad():
            for i in reversed(range(n)):
                t = torch.tensor([i] * shape[0])
                fn = cond_fn if (cond_fn is not None and self.timestep_map[i] < start_guide_steps) else None
                noise = torch.randn(*shape, generator=gen)
                img = self.p_sample(model, img, t, noise, clip_denoised, fn)["sample"]
        return img

    def ddim_sample_loop(self, model, shape, gen, clip_denoised=False, cond_fn=None,
                         start_guide_steps=500, eta=0.0):
        img = torch.randn(*shape, generator=gen)
        with torch.no_grad():
            for i in reversed(range(self.num_timesteps)):
                t = torch.tensor([i] * shape[0])
                fn = cond_fn if (cond_fn is not None and self.timestep_map[i] < start_guide_steps) else None
                noise = torch.randn(*shape, generator=gen)
                img = self.ddim_sample(model, img, t, noise, clip_denoised, fn, eta)["sample"]
        return img

    def vb_terms_bpd(self, model, x_start, x_t, t, clip_denoised=True):
        true_mean, _, true_log_variance_clipped = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance(model, x_t, t, clip_denoised)
        kl = normal_kl(true_mean, true_log_variance_clipped, out["mean"], out["log_variance"])
        kl = mean_flat(kl) / np.log(2.0)
        decoder_nll = -discretized_gaussian_log_likelihood(
            x_start, means=out["mean"], log_scales=0.5 * out["log_variance"])
        decoder_nll = mean_flat(decoder_nll) / np.log(2.0)
        output = torch.where((t == 0), decoder_nll, kl)
        return {"output": output, "pred_xstart": out["pred_xstart"]}

    def prior_bpd(self, x_start):
        t = torch.tensor([self.num_timesteps - 1] * x_start.shape[0])
        qt_mean, _, qt_log_variance = self.q_mean_variance(x_start, t)
        kl_prior = normal_kl(qt_mean, qt_log_variance, 0.0, 0.0)
        return mean_flat(kl_prior) / np.log(2.0)

    def calc_bpd_loop(self, model, x_start, gen, clip_denoised=True):
        vb, xstart_mse, mse = [], [], []
        for t in list(range(self.num_timesteps))[::-1]:
            t_batch = torch.tensor([t] * x_start.shape[0])
            noise = torch.randn(*x_start.shape, generator=gen)
            x_t = self.q_sample(x_start, t_batch, noise)
            with torch.no_grad():
                out = self.vb_terms_bpd(model, x_start, x_t, t_batch, clip_denoised)
            vb.append(out["output"])
            xstart_mse.append(mean_flat((out["pred_xstart"] - x_start) ** 2))
            eps = self.predict_eps_from_xstart(x_t, t_batch, out["pred_xstart"])
            mse.append(mean_flat((eps - noise) ** 2))
        vb = torch.stack(vb, dim=1)
        xstart_mse = torch.stack(xstart_mse, dim=1)
        mse = torch.stack(mse, dim=1)
        prior_bpd = self.prior_bpd(x_start)
        total_bpd = vb.sum(dim=1) + prior_bpd
        return {"total_bpd": total_bpd, "prior_bpd": prior_bpd, "vb": vb,
                "xstart_mse": xstart_mse, "mse": mse}


# ------------------------------------------------ classifier guidance (§6)

class ToyClassifier(torch.nn.Module):
    """logits = W2·SiLU(W1·x + b1 + (t/1000)·wt) + b2; mirrored in the Go test."""

    def __init__(self, d, h, k):
        super().__init__()
        self.l1 = torch.nn.Linear(d, h)
        self.wt = torch.nn.Parameter(torch.randn(h))
        self.l2 = torch.nn.Linear(h, k)

    def forward(self, x, t):
        h = self.l1(x) + (t.float() / 1000)[:, None] * self.wt[None]
        return self.l2(F.silu(h))


def cond_fn_single(classifier, y, scale):
    def cond_fn(x, t):
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            logits = classifier(x_in, t)
            log_probs = F.log_softmax(logits, dim=-1)
            selected = log_probs[range(len(logits)), y.view(-1)]
            return torch.autograd.grad(selected.sum(), x_in)[0] * scale
    return cond_fn


def cond_fn_multi(c1, y1, s1, c2, y2, s2):
    def cond_fn(x, t):
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            lp1 = F.log_softmax(c1(x_in, t), dim=-1)
            lp2 = F.log_softmax(c2(x_in, t), dim=-1)
            sel1 = lp1[range(len(lp1)), y1.view(-1)]
            sel2 = lp2[range(len(lp2)), y2.view(-1)]
            g1 = torch.autograd.grad(sel1.sum(), x_in, retain_graph=True)[0] * s1
            g2 = torch.autograd.grad(sel2.sum(), x_in)[0] * s2
            return g1 + g2
    return cond_fn


# ------------------------------------------------------------------ main

D, B = 16, 6
Y1 = (0, 1, 2, 2, 1, 0)  # labels of the first classifier's guidance


def models():
    """The small Cell_Unet and the two toy classifiers, seed 0, frozen."""
    torch.manual_seed(0)
    model = ref.Cell_Unet(D, [32, 32, 16, 8], 0.0).eval()
    cls1, cls2 = ToyClassifier(D, 24, 3), ToyClassifier(D, 24, 2)
    for p in list(model.parameters()) + list(cls1.parameters()) + list(cls2.parameters()):
        p.requires_grad_(False)
    return model, cls1, cls2


def guided_loop_t1000(model, cls1):
    """The full 1000-step ancestral loop guided by cls1 (scale 2, steps < 500),
    generator seed 13. Its result depends on every rounding of 1000 model
    evaluations, so the Go test compares it with this function run at test
    time on the same machine (loop_reference.py), not with a golden file."""
    dl = Diffusion(var_type="large")
    return dl.p_sample_loop(model, (B, D), torch.Generator().manual_seed(13), False,
                            cond_fn_single(cls1, torch.tensor(Y1), 2.0), 500)


def main():
    out = collections.OrderedDict()
    model, cls1, cls2 = models()
    for k, v in model.state_dict().items():
        out["unet." + k] = v
    for name, c in (("cls1", cls1), ("cls2", cls2)):
        for k, v in c.state_dict().items():
            out[f"{name}.{k}"] = v

    # space_timesteps
    for spec in ("ddim50", "ddim100", "ddim250", "ddim10", "ddim1000", "10,15,20", "1,2,3", "333,0,5", "7"):
        out["space." + spec] = torch.tensor(sorted(space_timesteps(1000, spec)), dtype=torch.int64)

    # Respaced schedule arrays (float64, host).
    d50 = Diffusion(space_timesteps(1000, "ddim50"))
    for name in ("betas", "alphas_cumprod", "alphas_cumprod_prev", "alphas_cumprod_next",
                 "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
                 "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2"):
        out["ddim50." + name] = torch.from_numpy(getattr(d50, name).copy())
    out["ddim50.timestep_map"] = torch.tensor(d50.timestep_map, dtype=torch.int64)
    mv, mlv = d50.model_variance()
    out["ddim50.model_variance"] = torch.from_numpy(mv.copy())

    # Inputs: x spans beyond [-1,1] so clipping matters; t covers both ends
    # and both sides of the guidance threshold.
    x = torch.randn(B, D) * 1.5
    x0 = (torch.rand(B, D) * 2.2 - 1.1)  # some entries beyond ±0.999 (decoder edges)
    z = torch.randn(B, D)
    t = torch.tensor([0, 1, 250, 499, 500, 999])
    t50 = torch.tensor([0, 1, 12, 25, 48, 49])
    y1 = torch.tensor(Y1)
    y2 = torch.tensor([1, 0, 1, 0, 1, 1])
    out.update({"in.x": x, "in.x0": x0, "in.z": z, "in.t": t, "in.t50": t50, "in.y1": y1, "in.y2": y2})

    dl, ds = Diffusion(var_type="large"), Diffusion(var_type="small")
    with torch.no_grad():
        for tag, dd in (("large", dl), ("small", ds)):
            for clip in (False, True):
                r = dd.p_mean_variance(model, x, t, clip)
                key = f"pmv.{tag}.clip{int(clip)}"
                for k in ("mean", "variance", "log_variance", "pred_xstart", "eps"):
                    out[f"{key}.{k}"] = r[k]
        r = d50.p_mean_variance(model, x, t50, True)
        for k in ("mean", "variance", "log_variance", "pred_xstart"):
            out["pmv.ddim50." + k] = r[k]

    g1 = cond_fn_single(cls1, y1, 2.0)
    gm = cond_fn_multi(cls1, y1, 2.0, cls2, y2, 0.6)
    out["guide.single"] = g1(x, t)
    out["guide.multi"] = gm(x, t)
    with torch.no_grad():
        r = dl.p_mean_variance(model, x, t, False)
        out["cond.mean"] = dl.condition_mean(g1, r, x, t)
        cs = dl.condition_score(g1, r, x, t)
        out["cond.score.mean"] = cs["mean"]
        out["cond.score.pred_xstart"] = cs["pred_xstart"]

        for clip in (False, True):
            out[f"psample.clip{int(clip)}"] = dl.p_sample(model, x, t, z, clip)["sample"]
        out["psample.guided"] = dl.p_sample(model, x, t, z, False, g1)["sample"]
        out["psample.small"] = ds.p_sample(model, x, t, z, False)["sample"]
        for eta in (0.0, 0.5):
            r = dl.ddim_sample(model, x, t, z, False, None, eta)
            out[f"ddim.eta{eta}.sample"] = r["sample"]
            out[f"ddim.eta{eta}.pred_xstart"] = r["pred_xstart"]
        out["ddim.guided"] = dl.ddim_sample(model, x, t, z, True, gm, 0.5)["sample"]
        out["ddim50.sample"] = d50.ddim_sample(model, x, t50, z, True, None, 0.5)["sample"]
        r = dl.ddim_reverse_sample(model, x, t, False)
        out["ddimrev.sample"] = r["sample"]
        out["ddimrev.pred_xstart"] = r["pred_xstart"]
        out["ddimrev.clip1"] = dl.ddim_reverse_sample(model, x, t, True)["sample"]

        # bits-per-dim helpers
        m1, m2 = torch.randn(B, D), torch.randn(B, D)
        lv1, lv2 = torch.randn(B, D), torch.randn(B, D)
        out.update({"bpd.m1": m1, "bpd.m2": m2, "bpd.lv1": lv1, "bpd.lv2": lv2})
        out["bpd.normal_kl"] = normal_kl(m1, lv1, m2, lv2)
        u = torch.linspace(-6, 6, 97)
        out["bpd.u"] = u
        out["bpd.cdf"] = approx_standard_normal_cdf(u)
        ls = torch.randn(B, D) * 0.5 - 2
        out["bpd.log_scales"] = ls
        out["bpd.dgll"] = discretized_gaussian_log_likelihood(x0, means=m1 * 0.1 + x0, log_scales=ls)

        d10 = Diffusion(space_timesteps(1000, "ddim10"))
        r = d10.calc_bpd_loop(model, x0, torch.Generator().manual_seed(14), clip_denoised=True)
        # calc_bpd_loop stacks the per-step terms in loop order, so its
        # column j is step T-1-j; Go indexes them by step (column t is step
        # t, as the spec writes vb[:,t]): flip for the comparison.
        for k, v in r.items():
            out["calcbpd." + k] = v.flip(1) if v.dim() == 2 else v

        # Whole loops, seeded generators.
        out["loop.psample.ddim10"] = d10.p_sample_loop(model, (B, D), torch.Generator().manual_seed(11))
    out["loop.ddim.ddim10"] = d10.ddim_sample_loop(model, (B, D), torch.Generator().manual_seed(12),
                                                   True, g1, 500, 0.5)

    write_safetensors(os.path.join(HERE, "golden.safetensors"), out)
    print(f"wrote {len(out)} tensors to golden.safetensors")


if __name__ == "__main__":
    main()
