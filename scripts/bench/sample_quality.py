#!/usr/bin/python3
"""bf16 against fp32 samples of the same seed (scripts/bench.sh): both runs
of `gotorch-train sample` draw the same noise, so their cells pair up.

    sample_quality.py FP32_PREFIX BF16_PREFIX MODEL

Reads PREFIX.npz (latents) and PREFIX.h5ad (decoded expression) of each and
prints one JSON object: the Pearson and Spearman correlation of the
per-gene means (the reference's SCC/PCC, here bf16 vs fp32), the same for
the per-coordinate latent means, and how close paired cells are (mean
cosine similarity and relative L2 distance of the latents).
"""
import json
import sys

import anndata
import numpy as np
from scipy import stats


def load(prefix):
    z = np.load(prefix + ".npz")["cell_gen"].astype(np.float64)
    a = anndata.read_h5ad(prefix + ".h5ad")
    x = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
    return z, x.astype(np.float64)


def main():
    fp32, bf16, model = sys.argv[1], sys.argv[2], sys.argv[3]
    z32, x32 = load(fp32)
    z16, x16 = load(bf16)
    g32, g16 = x32.mean(0), x16.mean(0)
    l32, l16 = z32.mean(0), z16.mean(0)
    cos = (z32 * z16).sum(1) / (np.linalg.norm(z32, axis=1) * np.linalg.norm(z16, axis=1))
    out = {
        "bench": "sample-quality", "impl": "go", "threads": 0, "mode": "", "model": model, "cells": int(z32.shape[0]),
        "genes": int(x32.shape[1]),
        "gene_mean_pearson": float(stats.pearsonr(g32, g16)[0]),
        "gene_mean_spearman": float(stats.spearmanr(g32, g16)[0]),
        "latent_mean_pearson": float(stats.pearsonr(l32, l16)[0]),
        "pair_cosine_mean": float(cos.mean()),
        "pair_rel_l2": float(np.linalg.norm(z32 - z16) / np.linalg.norm(z32)),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
