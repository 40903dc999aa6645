"""A faithful eager PyTorch re-implementation of the scDiffusion autoencoder
(`VAE/VAE_model.py`, `VAE/VAE_train.py` of github.com/EperLuo/scDiffusion @
e20ee19), built from ../shared/spec/scdiffusion.md §5. It is the yardstick
for gotorch-train's autoencoder golden tests
(cellunet/autoencoder/testdata/make_golden.py).

Module structure and registration order are the reference's, so state_dict
keys (`encoder.network.*`, `decoder.network.*`) and the order of random draws
at initialisation are identical. The unused residual option is omitted;
the SCimilarity initialisation (load_scimilarity) keeps the reference's key
lists.

Run with Debian's /usr/bin/python3 (python3-torch 1.13).
"""
import torch
import torch.nn.functional as F
from torch import nn


class Encoder(nn.Module):
    """network.i = Sequential(Dropout, Linear, BatchNorm1d, PReLU); network.L = Linear to the latent."""

    def __init__(self, n_genes, latent_dim=128, hidden_dim=(1024, 1024, 1024), dropout=0.0, input_dropout=0.0):
        super().__init__()
        hidden_dim = list(hidden_dim)
        self.network = nn.ModuleList()
        for i in range(len(hidden_dim)):
            fan_in = n_genes if i == 0 else hidden_dim[i - 1]
            p = input_dropout if i == 0 else dropout
            self.network.append(nn.Sequential(
                nn.Dropout(p=p), nn.Linear(fan_in, hidden_dim[i]), nn.BatchNorm1d(hidden_dim[i]), nn.PReLU()))
        self.network.append(nn.Linear(hidden_dim[-1], latent_dim))

    def forward(self, x):
        for layer in self.network:
            x = layer(x)
        return F.normalize(x, p=2, dim=1)


class Decoder(nn.Module):
    """network.0 = Sequential(Linear, BN, PReLU); network.i>0 = Sequential(Dropout, Linear, BN, PReLU);
    network.L = Linear to the genes."""

    def __init__(self, n_genes, latent_dim=128, hidden_dim=(1024, 1024, 1024), dropout=0.0):
        super().__init__()
        hidden_dim = list(hidden_dim)
        self.network = nn.ModuleList()
        for i in range(len(hidden_dim)):
            if i == 0:
                self.network.append(nn.Sequential(
                    nn.Linear(latent_dim, hidden_dim[i]), nn.BatchNorm1d(hidden_dim[i]), nn.PReLU()))
            else:
                self.network.append(nn.Sequential(
                    nn.Dropout(p=dropout), nn.Linear(hidden_dim[i - 1], hidden_dim[i]),
                    nn.BatchNorm1d(hidden_dim[i]), nn.PReLU()))
        self.network.append(nn.Linear(hidden_dim[-1], n_genes))

    def forward(self, x):
        for layer in self.network:
            x = layer(x)
        return x


class VAE(nn.Module):
    """The reference's deterministic autoencoder: hidden [1024]*3, latent 128, dropout 0;
    the decoder uses the hidden widths reversed."""

    def __init__(self, num_genes, hidden_dim=(1024, 1024, 1024), latent_dim=128, dropout=0.0, input_dropout=0.0):
        super().__init__()
        hidden_dim = list(hidden_dim)
        self.encoder = Encoder(num_genes, latent_dim, hidden_dim, dropout, input_dropout)
        self.decoder = Decoder(num_genes, latent_dim, list(reversed(hidden_dim)), dropout)
        self.loss_autoencoder = nn.MSELoss(reduction="mean")

    def forward(self, genes, return_latent=False, return_decoded=False):
        if return_decoded:
            return nn.ReLU()(self.decoder(genes))  # ReLU only when decoding
        latent = self.encoder(genes)
        if return_latent:
            return latent
        return self.decoder(latent)

    def make_optimizer(self, lr=5e-4, weight_decay=0.01):
        return torch.optim.AdamW(list(self.encoder.parameters()) + list(self.decoder.parameters()),
                                 lr=lr, weight_decay=weight_decay)

    def train_step(self, genes, opt):
        """One [REF] update: MSE(mean) between the raw reconstruction and the input."""
        recon = self.forward(genes)
        loss = self.loss_autoencoder(recon, genes)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()


# --- SCimilarity initialisation (VAE/VAE_model.py Encoder.load_state / Decoder.load_state) ---
# The reference's key lists, typo included: 'network.0.3.weight]' matches no key, so the first
# encoder PReLU weight IS loaded. load_state_dict(strict=False) ignores missing and unexpected keys
# but still raises on a shape mismatch.
ENCODER_DROPPED = ['network.0.1.weight', 'network.0.1.bias', 'network.0.2.weight', 'network.0.2.bias',
                   'network.0.2.running_mean', 'network.0.2.running_var', 'network.0.2.num_batches_tracked',
                   'network.0.3.weight]']
DECODER_DROPPED = ['network.3.weight', 'network.3.bias']


def load_scimilarity_state(module, filename, dropped):
    """Encoder.load_state / Decoder.load_state of the reference (map_location cpu)."""
    ckpt = torch.load(filename, map_location=torch.device("cpu"))
    state_dict = ckpt['state_dict']
    for key in dropped:
        if key in state_dict:
            del state_dict[key]
    module.load_state_dict(state_dict, strict=False)


def load_scimilarity(vae, directory):
    """VAE_train.py with --state_dict DIR: encoder.ckpt and decoder.ckpt from DIR."""
    load_scimilarity_state(vae.encoder, directory + "/encoder.ckpt", ENCODER_DROPPED)
    load_scimilarity_state(vae.decoder, directory + "/decoder.ckpt", DECODER_DROPPED)
