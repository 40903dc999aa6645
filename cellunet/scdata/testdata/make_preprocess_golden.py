#!/usr/bin/python3
"""Golden outputs for the preprocessing test (preprocess_test.go).

Run with Debian's /usr/bin/python3 (python3-anndata 0.8, h5py, numpy,
scipy, pandas) from this folder:

    GOTORCH_TESTDATA_DIR=/path/to/shared/data /usr/bin/python3 make_preprocess_golden.py

1. Writes synthetic_counts.h5ad: a small AnnData (CSR, obs/celltype) built
   to hit the edges of the reference steps (asserted below): duplicate gene
   names including a collision with an existing "-1" name, genes present in
   exactly 2 and 3 cells, stored explicit zeros, a cell with 10 positive
   genes of which one is filtered away (so filter order matters), a cell
   with exactly 10 kept genes, labels that sort differently by case and
   accent, and a label that only occurs in a dropped cell.
2. Implements scDiffusion's loader steps 2-7 independently with
   numpy/scipy (filter_genes(min_cells=3), filter_cells(min_genes=10),
   var_names_make_unique via anndata, LabelEncoder = np.unique,
   normalize_total(1e4), log1p; normalisation in float64, one rounding to
   float32) on several fixtures (the pbmc4k h5ad fixture holds the same
   matrix and labels as the plain file, so the Go test checks it against
   "pbmc4k_plain") and stores, per case, the kept genes,
   source gene indices, kept cells, label ids, classes, per-row nnz,
   per-row sum and position-weighted sum of the float32 values, and 40
   sampled entries, in preprocess_golden.npz (np.savez_compressed).
"""
import os
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
import anndata as ad
from anndata.utils import make_index_unique

import make_expected as mx


def synthetic():
    rng = np.random.default_rng(7)
    n, g = 40, 30
    X = rng.integers(0, 6, size=(n, g)).astype(np.float32)
    X[rng.random((n, g)) < 0.45] = 0
    X[0, :] = 0; X[0, [0, 1, 2, 3, 6, 7, 8, 9, 10, 11]] = 3  # 10 positives, one in gene 3
    X[7, :] = 0; X[7, [0, 1, 2, 4, 6, 7, 8, 9, 11, 12]] = 1  # exactly 10 kept genes
    X[8, :] = 0; X[8, :5] = 2                                 # 4 kept positives
    X[:, 3] = 0; X[[0, 1], 3] = [5, 2]                        # gene 3: 2 cells -> dropped
    X[:, 4] = 0; X[[2, 6, 7], 4] = [1, 1, 4]                  # gene 4: exactly 3 cells -> kept
    X[:, 5] = 0; X[1, 5] = 3                                  # gene 5: 1 cell (+ explicit zeros) -> dropped
    pos = X > 0
    assert pos[:, 3].sum() == 2 and pos[:, 4].sum() == 3 and pos[:, 5].sum() == 1
    kept_genes = pos.sum(axis=0) >= 3
    assert pos[0].sum() == 10 and (pos[0] & kept_genes).sum() == 9   # cell 0 dropped only because gene 3 is
    assert (pos[7] & kept_genes).sum() == 10                         # cell 7 kept at the threshold
    m = sp.csr_matrix(X)
    # store explicit zeros in gene 5 for a few cells (they must not count)
    m = sp.csr_matrix(m)
    rows, cols, vals = [], [], []
    coo = m.tocoo()
    rows, cols, vals = list(coo.row), list(coo.col), list(coo.data)
    for r in (3, 4, 10, 11):
        rows.append(r); cols.append(5); vals.append(0.0)
    m = sp.csr_matrix((np.array(vals, np.float32), (rows, cols)), shape=(n, g))
    m.sort_indices()
    assert m.nnz > np.count_nonzero(X)
    names = [f"G{j}" for j in range(g)]
    names[10] = names[11] = names[12] = "DUP"
    names[13] = "DUP-1"
    names[20] = names[21] = "ACTB"
    labels = np.array(["b", "B", "a", "\u00c4", "T cell"], dtype=object)[rng.integers(0, 5, size=n)]
    labels[8] = "only-in-dropped"
    obs = pd.DataFrame({"celltype": pd.Categorical(labels)}, index=[f"c{i:02d}" for i in range(n)])
    a = ad.AnnData(X=m, obs=obs, var=pd.DataFrame(index=names))
    a.write_h5ad("synthetic_counts.h5ad")


def preprocess(X, genes, barcodes, labels):
    X = X.tocsr().astype(np.float32)
    gene_cells = np.asarray((X > 0).sum(axis=0)).ravel()
    gk = np.flatnonzero(gene_cells >= 3)
    Xg = X[:, gk].tocsr()
    cell_genes = np.asarray((Xg > 0).sum(axis=1)).ravel()
    ck = np.flatnonzero(cell_genes >= 10)
    Xf = Xg[ck].tocsr()
    Xf.eliminate_zeros()
    Xf.sort_indices()
    kept = make_index_unique(pd.Index([genes[j] for j in gk])).tolist()
    X64 = Xf.astype(np.float64)
    rowsum = np.asarray(X64.sum(axis=1)).ravel()
    vals = np.log1p(X64.data * 1e4 / np.repeat(rowsum, np.diff(Xf.indptr))).astype(np.float32)
    out = dict(genes=np.array(kept), gene_index=gk.astype(np.int64), cells=ck.astype(np.int64))
    if labels is not None:
        classes, ids = np.unique(np.array([labels[i] for i in ck]), return_inverse=True)
        out.update(labels=ids.astype(np.int64), classes=classes)
    ip = Xf.indptr
    out["row_nnz"] = np.diff(ip).astype(np.int64)
    v64 = vals.astype(np.float64)
    out["row_sum"] = np.array([v64[ip[i]:ip[i + 1]].sum() for i in range(len(ck))])
    out["row_wsum"] = np.array([(v64[ip[i]:ip[i + 1]] * (Xf.indices[ip[i]:ip[i + 1]] + 1)).sum() for i in range(len(ck))])
    k = np.unique(np.linspace(0, len(vals) - 1, 40).astype(np.int64))
    srow = np.searchsorted(ip, k, side="right") - 1
    out.update(sample_row=srow.astype(np.int64), sample_col=Xf.indices[k].astype(np.int64), sample_val=vals[k])
    return out


def main():
    mx.DATA = mx.data_dir()
    synthetic()
    A8 = os.path.join(mx.DATA, "format_fixtures/anndata_0.8_written/")
    cases = {}

    def from_h5ad(name, path, key):
        f = h5py.File(path, "r")
        cases[name] = preprocess(mx.h5ad_matrix(f, "X"), mx.h5ad_index(f, "var"), mx.h5ad_index(f, "obs"),
                                 mx.h5ad_column(f, "obs/" + key) if key else None)

    from_h5ad("synthetic", "synthetic_counts.h5ad", "celltype")
    from_h5ad("pbmc68k_counts_csr", A8 + "pbmc68k_counts_csr.h5ad", "bulk_labels")
    h = h5py.File(os.path.join(mx.DATA, "pbmc4k_scdcc/10X_PBMC_top2000.h5"), "r")
    X = h["X"][()]
    cases["pbmc4k_plain"] = preprocess(sp.csr_matrix(X), [f"gene{j}" for j in range(X.shape[1])],
                                       None, [str(int(v)) for v in h["Y"][()]])
    t = h5py.File(os.path.join(mx.DATA, "format_fixtures/10x/3.0.0/filtered_feature_bc_matrix.h5"), "r")["matrix"]
    gn, cn = (int(v) for v in t["shape"][()])
    X = sp.csr_matrix((t["data"][()].astype(np.float32), t["indices"][()], t["indptr"][()]), shape=(cn, gn))
    cases["tenx_v3"] = preprocess(X, mx.strings(t["features/name"]), None, None)
    flat = {f"{c}__{k}": v for c, d in cases.items() for k, v in d.items()}
    np.savez_compressed("preprocess_golden.npz", **flat)
    for c, d in cases.items():
        print(c, "cells", len(d["cells"]), "genes", len(d["genes"]), "classes", list(d.get("classes", []))[:12])


if __name__ == "__main__":
    main()
