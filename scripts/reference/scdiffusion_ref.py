"""A faithful eager PyTorch re-implementation of the scDiffusion reference
(github.com/EperLuo/scDiffusion @ e20ee19) training path, built from
../shared/spec/scdiffusion.md §1-§3. It is the yardstick for gotorch-train's
golden tests (cellunet/testdata/make_golden.py) and benchmarks
(scripts/bench/cellunet_step_ref.py); it deliberately keeps the reference's
behaviour, including its defects where the benchmark must measure them
(float64 noise, per-call schedule uploads, per-parameter norms every step).

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

    def q_sample(self, x_start, t, noise):
        return (extract_into_tensor(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
                + extract_into_tensor(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise)

    def training_losses(self, model, x_start, t, noise):
        x_t = self.q_sample(x_start, t, noise)
        out = model(x_t, t)
        return ((noise - out) ** 2).mean(dim=list(range(1, len(out.shape))))


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
