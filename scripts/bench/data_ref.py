#!/usr/bin/python3
"""The reference's data path (cell_datasets_loader.load_data, spec §4 steps
1-9) on one .h5ad, for the memory benchmark of scripts/bench-data.sh: read
the AnnData (X sparse), filter genes (>= 3 cells) and cells (>= 10 genes),
normalize_total(1e4), log1p, X.toarray(), torch.tensor, then one forward
pass of the whole matrix through the autoencoder's encoder in train mode
without no_grad — what the reference does on its GPU, run here on the CPU.

scanpy is not packaged by Debian 12, so its three calls are written out with
scipy.sparse the way scanpy performs them (filters subset a copy; the
normalisation and log1p work in place on the CSR data).

    data_ref.py DATA.h5ad AE_CHECKPOINT.pt
Prints one JSON object: peak RSS after each phase (ru_maxrss) and times.
"""
import json
import os
import resource
import sys
import time

import anndata
import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from vae_ref import VAE  # noqa: E402


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    path, ckpt = sys.argv[1], sys.argv[2]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out, t0 = {"impl": "pytorch-reference"}, time.time()
    ad = anndata.read_h5ad(path)
    X = ad.X.tocsr()
    out["read_s"], out["read_peak_mib"] = time.time() - t0, peak_mib()
    # sc.pp.filter_genes(min_cells=3): number of cells with a count per gene, subset a copy.
    keep_g = np.asarray((X > 0).sum(axis=0)).ravel() >= 3
    X = X[:, keep_g]
    # sc.pp.filter_cells(min_genes=10)
    keep_c = np.asarray((X > 0).sum(axis=1)).ravel() >= 10
    X = X[keep_c]
    # sc.pp.normalize_total(target_sum=1e4), sc.pp.log1p: in place on the CSR data
    counts = np.asarray(X.sum(axis=1)).ravel()
    X = sp.diags(1e4 / counts) @ X
    X = X.tocsr().astype(np.float32)
    np.log1p(X.data, out=X.data)
    out["preprocess_s"], out["preprocess_peak_mib"] = time.time() - t0, peak_mib()
    # step 8: densify; step 9: torch.tensor and the one-pass encode (train mode, grad on)
    dense = X.toarray()
    tensor = torch.tensor(dense)
    out["densify_s"], out["host_peak_mib"] = time.time() - t0, peak_mib()
    n, g = tensor.shape
    model = VAE(g)
    model.load_state_dict(torch.load(ckpt))
    model.train()
    z = model.encoder(tensor)
    out["encode_s"], out["encode_peak_mib"] = time.time() - t0, peak_mib()
    out.update(cells=int(n), genes=int(g), latent_norm=float(z[0].norm()))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
