"""A faithful eager PyTorch re-implementation of the scDiffusion reference
(github.com/EperLuo/scDiffusion @ e20ee19) training and sampling paths, built
from ../shared/spec/scdiffusion.md §1-§3 and §6. It is the yardstick for
gotorch-train's golden tests (cellunet/testdata/make_golden.py,
cellunet/classifier/testdata/make_golden.py) and benchmarks
(scripts/bench/ref_bench.py, scripts/bench/sample_ref.py); it deliberately
keeps the reference's behaviour, including its defects where the benchmark
must measure them (float64 noise, per-call schedule uploads, FIXED_LARGE
arrays rebuilt with numpy on every call, per-parameter norms every step).

Run with Debian's /usr/bin/python3 (python3-torch 1.13).
"""
import copy
import math

import numpy as np
import torch
import torch.nn as nn


# ---------------------------------------------------------------- model (§1)

def timestep_embedding(timesteps, dim, max_period=10000):
    """guided_diffusion's sinusoidal embedding, cos half first."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half
                      ).to(device=timesteps.device)
    args = timesteps[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimeEmbedding(nn.Module):
    def __init__(self, hidden_dim):
        super().__init__()
        self.time_embed = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.SiLU(),
                                        nn.Linear(hidden_dim, hidden_dim))
        self.hidden_dim = hidden_dim

    def forward(self, t):
        return self.time_embed(timestep_embedding(t, self.hidden_dim).squeeze(1))


class ResidualBlock(nn.Module):
    """Misnamed: no internal shortcut. fc -> +emb_layer(emb) -> LayerNorm -> SiLU -> Dropout(0)."""

    def __init__(self, in_features, out_features, time_features):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)
        self.norm = nn.LayerNorm(out_features)
        self.emb_layer = nn.Sequential(nn.SiLU(), nn.Linear(time_features, out_features))
        self.act = nn.SiLU()
        self.drop = nn.Dropout(0)

    def forward(self, x, emb):
        h = self.fc(x)
        h = h + self.emb_layer(emb)
        h = self.norm(h)
        h = self.act(h)
        return self.drop(h)


class Cell_Unet(nn.Module):
    def __init__(self, input_dim=128, hidden_num=(512, 512, 256, 128), dropout=0.0):
        super().__init__()
        hidden_num = list(hidden_num)
        self.hidden_num = hidden_num
        self.time_embedding = TimeEmbedding(hidden_num[0])
        self.layers = nn.ModuleList()
        self.layers.append(ResidualBlock(input_dim, hidden_num[0], hidden_num[0]))
        for i in range(len(hidden_num) - 1):
            self.layers.append(ResidualBlock(hidden_num[i], hidden_num[i + 1], hidden_num[0]))
        self.reverse_layers = nn.ModuleList()
        for i in reversed(range(len(hidden_num) - 1)):
            self.reverse_layers.append(ResidualBlock(hidden_num[i + 1], hidden_num[i], hidden_num[0]))
        self.out1 = nn.Linear(hidden_num[0], int(hidden_num[1] * 2))
        self.norm_out = nn.LayerNorm(int(hidden_num[1] * 2))
        self.out2 = nn.Linear(int(hidden_num[1] * 2), input_dim, bias=True)
        self.act = nn.SiLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x_input, t, y=None):
        x = x_input.float()
        emb = self.time_embedding(t)
        history = []
        for layer in self.layers:
            x = layer(x, emb)
            history.append(x)
        history.pop()
        for layer in self.reverse_layers:
            x = layer(x, emb)
            x = x + history.pop()
        x = self.out1(x)
        x = self.norm_out(x)
        x = self.act(x)
        return self.out2(x)


class Cell_classifier(nn.Module):
    """The noisy-latent classifier of spec §6 (cell_model.py's Cell_classifier).

    Registration order = the reference's state_dict order and order of random
    draws: time_embed.{0,2}, fc1, emb_layers1.1, norm1, fc2, emb_layers2.1,
    norm2, fc3, emb_layers3.1 (never used in forward), norm3, out. hidden_num[3]
    is unused. BatchNorm1d keeps running statistics; Dropout(dropout) follows
    every SiLU (train mode only)."""

    def __init__(self, input_dim=128, hidden_num=(512, 512, 256, 128), num_class=11, dropout=0.1):
        super().__init__()
        hidden_num = list(hidden_num)
        self.hidden_num = hidden_num
        self.num_class = num_class
        self.time_embed = nn.Sequential(nn.Linear(hidden_num[0], hidden_num[0]), nn.SiLU(),
                                        nn.Linear(hidden_num[0], hidden_num[0]))
        self.fc1 = nn.Linear(input_dim, hidden_num[0])
        self.emb_layers1 = nn.Sequential(nn.SiLU(), nn.Linear(hidden_num[0], hidden_num[0]))
        self.norm1 = nn.BatchNorm1d(hidden_num[0])
        self.fc2 = nn.Linear(hidden_num[0], hidden_num[1])
        self.emb_layers2 = nn.Sequential(nn.SiLU(), nn.Linear(hidden_num[0], hidden_num[1]))
        self.norm2 = nn.BatchNorm1d(hidden_num[1])
        self.fc3 = nn.Linear(hidden_num[1], hidden_num[2])
        self.emb_layers3 = nn.Sequential(nn.SiLU(), nn.Linear(hidden_num[0], hidden_num[2]))  # unused
        self.norm3 = nn.BatchNorm1d(hidden_num[2])
        self.act = nn.SiLU()
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_num[2], num_class)

    def forward(self, x_input, t):
        emb = self.time_embed(timestep_embedding(t, self.hidden_num[0]).squeeze(1))
        x = self.fc1(x_input)
        x = x + self.emb_layers1(emb)
        x = self.drop(self.act(self.norm1(x)))
        x = self.fc2(x)
        x = x + self.emb_layers2(emb)
        x = self.drop(self.act(self.norm2(x)))
        x = self.fc3(x)  # no time term
        x = self.drop(self.act(self.norm3(x)))
        return self.out(x)


# ------------------------------------------------------ diffusion (§2)

def linear_betas(T=1000):
    scale = 1000 / T
    return np.linspace(scale * 0.0001, scale * 0.02, T, dtype=np.float64)


def extract_into_tensor(arr, timesteps, broadcast_shape):
    """[REF] uploads the whole float64 array on every call."""
    res = torch.from_numpy(arr).to(device=timesteps.device)[timesteps].float()
    while len(res.shape) < len(broadcast_shape):
        res = res[..., None]
    return res.expand(broadcast_shape)


class GaussianDiffusion:
    def __init__(self, betas):
        self.betas = betas
        self.num_timesteps = len(betas)
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas, axis=0)
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)

        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

    def q_sample(self, x_start, t, noise):
        return (extract_into_tensor(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
                + extract_into_tensor(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise)

    def training_losses(self, model, x_start, t, noise):
        x_t = self.q_sample(x_start, t, noise)
        out = model(x_t, t)
        return ((noise - out) ** 2).mean(dim=list(range(1, len(out.shape))))


    # ---- reverse process, as gaussian_diffusion.py runs it ([REF]) ----

    def p_mean_variance(self, model, x, t, clip_denoised):
        """epsilon prediction, FIXED_LARGE variance: [REF] rebuilds both
        variance arrays with numpy and uploads every array on every call; the
        model is called through respace.py's _WrappedModel, which builds the
        timestep map tensor on every call (identity without respacing)."""
        map_tensor = torch.tensor(list(range(self.num_timesteps)), device=t.device, dtype=t.dtype)
        model_output = model(x, map_tensor[t])
        model_variance = np.append(self.posterior_variance[1], self.betas[1:])
        model_log_variance = np.log(np.append(self.posterior_variance[1], self.betas[1:]))
        model_variance = extract_into_tensor(model_variance, t, x.shape)
        model_log_variance = extract_into_tensor(model_log_variance, t, x.shape)
        pred_xstart = (extract_into_tensor(self.sqrt_recip_alphas_cumprod, t, x.shape) * x
                       - extract_into_tensor(self.sqrt_recipm1_alphas_cumprod, t, x.shape) * model_output)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean = (extract_into_tensor(self.posterior_mean_coef1, t, x.shape) * pred_xstart
                + extract_into_tensor(self.posterior_mean_coef2, t, x.shape) * x)
        return {"mean": mean, "variance": model_variance, "log_variance": model_log_variance,
                "pred_xstart": pred_xstart}

    def condition_mean(self, cond_fn, p_mean_var, x, t):
        gradient = cond_fn(x, t)
        return p_mean_var["mean"].float() + p_mean_var["variance"] * gradient.float()

    def p_sample(self, model, x, t, clip_denoised=False, cond_fn=None, nw=0.5):
        out = self.p_mean_variance(model, x, t, clip_denoised)
        noise = torch.randn_like(x)
        nonzero_mask = (t != 0).float().view(-1, *([1] * (len(x.shape) - 1)))
        if cond_fn is not None:
            out["mean"] = self.condition_mean(cond_fn, out, x, t)
        sample = out["mean"] + nonzero_mask * torch.exp(nw * out["log_variance"]) * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def p_sample_loop(self, model, shape, noise=None, clip_denoised=False, cond_fn=None, start_time=1000,
                      start_guide_steps=500, nw=0.5, progress=None):
        """p_sample_loop(_progressive): no-grad steps start_time-1 .. 0, guidance
        only while i < start_guide_steps; returns (sample, traj) with traj
        always empty, as the reference does."""
        img = noise if noise is not None else torch.randn(*shape)
        traj = []
        for i in list(range(start_time))[::-1]:
            t = torch.tensor([i] * shape[0])
            with torch.no_grad():
                out = self.p_sample(model, img, t, clip_denoised=clip_denoised,
                                    cond_fn=cond_fn if i < start_guide_steps else None, nw=nw)
                img = out["sample"]
            if progress is not None:
                progress(i)
        return img, traj


class UniformSampler:
    def __init__(self, T):
        self._weights = np.ones([T])

    def sample(self, batch_size, device):
        p = self._weights / np.sum(self._weights)
        idx = np.random.choice(len(p), size=(batch_size,), p=p)
        weights = 1 / (len(p) * p[idx])
        return torch.from_numpy(idx).long().to(device), torch.from_numpy(weights).float().to(device)


# ------------------------------------------------------- train step (§3)

class ReferenceTrainer:
    """One TrainLoop.run_step of cell_train.py on one process: zero grads,
    per-microbatch float64 noise and loss.backward(), per-parameter norms,
    AdamW step, EMA update, LR anneal."""

    def __init__(self, model, diffusion, lr=1e-4, weight_decay=1e-4, ema_rate=0.9999,
                 lr_anneal_steps=800000, microbatch=-1):
        self.model, self.diffusion = model, diffusion
        self.params = list(model.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay)
        self.ema = [copy.deepcopy(p.detach()) for p in self.params]
        self.ema_rate = ema_rate
        self.lr, self.lr_anneal_steps = lr, lr_anneal_steps
        self.sampler = UniformSampler(diffusion.num_timesteps)
        self.microbatch = microbatch
        self.step = 0

    def run_step(self, batch):
        self.opt.zero_grad()
        mb = self.microbatch if self.microbatch > 0 else batch.shape[0]
        losses = []
        for i in range(0, batch.shape[0], mb):
            micro = batch[i:i + mb]
            t, weights = self.sampler.sample(micro.shape[0], micro.device)
            noise = torch.randn(*micro.shape, dtype=torch.float64, device=micro.device)  # [REF] float64 noise
            loss = (self.diffusion.training_losses(self.model, micro, t, noise) * weights).mean()
            loss.backward()
            losses.append(loss.detach())
        # [REF] norms every step, one .item() per parameter tensor.
        grad_norm, param_norm = 0.0, 0.0
        for p in self.params:
            with torch.no_grad():
                param_norm += torch.norm(p, p=2, dtype=torch.float32).item() ** 2
                if p.grad is not None:
                    grad_norm += torch.norm(p.grad, p=2, dtype=torch.float32).item() ** 2
        self.opt.step()
        with torch.no_grad():
            for targ, src in zip(self.ema, self.params):
                targ.detach().mul_(self.ema_rate).add_(src, alpha=1 - self.ema_rate)
        frac_done = self.step / self.lr_anneal_steps
        for g in self.opt.param_groups:
            g["lr"] = self.lr * (1 - frac_done)
        self.step += 1
        return losses, math.sqrt(grad_norm), math.sqrt(param_norm)
