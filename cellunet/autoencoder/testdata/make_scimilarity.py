#!/usr/bin/python3
"""An SCimilarity-style model directory with random weights, and what the
reference makes of it, for the --state_dict test (pretrained_test.go).

Run with Debian's python3-torch 1.13:
    cd cellunet/autoencoder/testdata && /usr/bin/python3 make_scimilarity.py
Writes (all committed; the Go tests only read them):
  scimilarity/encoder.ckpt, scimilarity/decoder.ckpt
      torch.save({"state_dict": module.state_dict(), "hyper_parameters": {...}})
      of an Encoder/Decoder in the reference's layout (scripts/reference/vae_ref.py)
      for 70 genes, hidden [64, 48, 32], latent 16, every tensor random
      (weights, biases, BatchNorm affine and running statistics,
      num_batches_tracked, PReLU slopes), plus a key the model lacks;
  scimilarity/gene_order.tsv  its 70 gene names, one per line;
  scimilarity_expected.safetensors
      the state_dict of VAE(50 genes, hidden [64, 48, 32], latent 16) built
      after torch.manual_seed(5) and then initialised as VAE_train.py does with
      --state_dict scimilarity (Encoder.load_state, Decoder.load_state: the
      first encoder Linear and BatchNorm and the last decoder Linear are
      dropped, the first encoder PReLU is loaded because of the key typo,
      strict=False). The data has other genes (50 ≠ 70): genes are not
      aligned, as in the reference.
"""
import collections
import os
import sys

import torch

sys.path.insert(0, "../../../scripts/reference")
sys.path.insert(0, "../../../cgotorch/testdata")
from make_golden import write_safetensors  # noqa: E402
from vae_ref import VAE, Encoder, Decoder, load_scimilarity  # noqa: E402

HIDDEN, LATENT, G_SC, G_DATA = [64, 48, 32], 16, 70, 50


def randomise(module, gen):
    sd = module.state_dict()
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            v.fill_(int(torch.randint(1, 10000, (1,), generator=gen)))
        elif k.endswith("running_var"):
            v.copy_(torch.rand(v.shape, generator=gen) + 0.5)
        else:
            v.copy_(torch.randn(v.shape, generator=gen) * 0.3 + 0.1)
    return sd


def main():
    gen = torch.Generator().manual_seed(42)
    os.makedirs("scimilarity", exist_ok=True)
    enc = Encoder(G_SC, LATENT, HIDDEN)
    dec = Decoder(G_SC, LATENT, list(reversed(HIDDEN)))
    hp = {"n_genes": G_SC, "latent_dim": LATENT, "hidden_dim": HIDDEN, "dropout": 0.5, "input_dropout": 0.4, "residual": False}
    for name, m in (("encoder", enc), ("decoder", dec)):
        sd = collections.OrderedDict(randomise(m, gen))
        sd["network.99.extra"] = torch.ones(3)   # a key the model lacks: ignored (strict=False)
        torch.save({"state_dict": sd, "hyper_parameters": hp}, f"scimilarity/{name}.ckpt")
    with open("scimilarity/gene_order.tsv", "w") as f:
        f.write("".join(f"SCG{j}\n" for j in range(G_SC)))

    torch.manual_seed(5)
    vae = VAE(G_DATA, HIDDEN, LATENT)
    load_scimilarity(vae, "scimilarity")
    out = collections.OrderedDict((k, v) for k, v in vae.state_dict().items())
    write_safetensors("scimilarity_expected.safetensors", out)
    print("wrote scimilarity/ and scimilarity_expected.safetensors:", len(out), "tensors")


main()
