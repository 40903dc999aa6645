#!/usr/bin/python3
"""Write expected.json: what every fixture in the shared data folder must
read as, computed independently of the Go code with h5py, numpy and scipy.

Run with Debian's /usr/bin/python3 (python3-h5py, python3-numpy,
python3-scipy) from this folder:

    GOTORCH_TESTDATA_DIR=/path/to/shared/data /usr/bin/python3 make_expected.py

Without GOTORCH_TESTDATA_DIR the data folder is <repo root>/../shared/data.
For every case it records the shape, nnz, first/last names, SHA-256 of the
gene names, barcodes and labels (joined with "\n"), label counts, per-row
nnz (SHA-256 of int64 LE and the first 10), row sums, a SHA-256 of the
canonical CSR (indptr int64 LE, indices int32 LE, data float32 LE; indices
sorted within rows; dense sources keep only non-zeros) and a few sampled
entries. The output is deterministic.
"""
import gzip, hashlib, json, os, sys
import h5py
import numpy as np
import scipy.io
import scipy.sparse as sp


def data_dir():
    d = os.environ.get("GOTORCH_TESTDATA_DIR")
    if d:
        return d
    p = os.path.abspath(os.getcwd())
    while not os.path.exists(os.path.join(p, "go.mod")):
        q = os.path.dirname(p)
        if q == p:
            sys.exit("no go.mod above the working directory and GOTORCH_TESTDATA_DIR unset")
        p = q
    return os.path.join(p, "..", "shared", "data")


def s(x):
    return x.decode() if isinstance(x, bytes) else str(x)


def strings(ds):
    return [s(v) for v in ds[()]]


def sha_strings(v):
    return hashlib.sha256("\n".join(v).encode()).hexdigest()


def h5ad_index(f, group):
    g = f[group]
    name = g.attrs.get("_index")
    if name is None:
        name = "_index" if "_index" in g else "index"
    return strings(g[s(name)])


def h5ad_column(f, obj):
    o = f[obj]
    if isinstance(o, h5py.Group):  # anndata >= 0.8 categorical
        cats = strings(o["categories"])
        return [cats[c] for c in o["codes"][()]]
    if "categories" in o.attrs:  # anndata 0.7 categorical
        cats = strings(f[o.attrs["categories"]])
        return [cats[c] for c in o[()]]
    v = o[()]
    if v.dtype.kind in "iu":
        return [str(int(x)) for x in v]
    return strings(o)


def h5ad_matrix(f, obj):
    o = f[obj]
    if isinstance(o, h5py.Dataset):
        return sp.csr_matrix(o[()].astype(np.float32))
    enc = s(o.attrs["encoding-type"])
    shape = tuple(int(x) for x in o.attrs["shape"])
    args = (o["data"][()].astype(np.float32), o["indices"][()], o["indptr"][()])
    m = sp.csr_matrix(args, shape=shape) if enc == "csr_matrix" else sp.csc_matrix(args, shape=shape).tocsr()
    m.sort_indices()
    return m


def case_h5ad(name, rel, label_key=None, use_raw=False):
    f = h5py.File(os.path.join(DATA, rel), "r")
    x = "raw/X" if use_raw else "X"
    var = "raw/var" if use_raw else "var"
    out = dict(name=name, path=rel, format="h5ad", label_key=label_key or "", use_raw=use_raw)
    return describe(out, h5ad_matrix(f, x), h5ad_index(f, var), None, h5ad_index(f, "obs"),
                    h5ad_column(f, "obs/" + label_key) if label_key else None)


def case_plain(name, rel):
    f = h5py.File(os.path.join(DATA, rel), "r")
    X = f["X"][()].astype(np.float32)
    m = sp.csr_matrix(X)
    out = dict(name=name, path=rel, format="plain-hdf5", label_key="", use_raw=False)
    return describe(out, m, [f"gene{j}" for j in range(X.shape[1])], None,
                    [f"cell{i}" for i in range(X.shape[0])], [str(int(v)) for v in f["Y"][()]])


def case_10x_h5(name, rel, genome=""):
    f = h5py.File(os.path.join(DATA, rel), "r")
    out = dict(name=name, path=rel, format="10x-h5", genome=genome, no_labels=True)
    if "matrix" in f:
        g = f["matrix"]
        names, ids = strings(g["features/name"]), strings(g["features/id"])
        keep = np.array([s(t) == "Gene Expression" for t in g["features/feature_type"][()]])
    else:
        g = f[genome]
        names, ids = strings(g["gene_names"]), strings(g["genes"])
        keep = np.ones(len(names), bool)
    genes_n, cells_n = (int(v) for v in g["shape"][()])
    m = sp.csr_matrix((g["data"][()].astype(np.float32), g["indices"][()], g["indptr"][()]), shape=(cells_n, genes_n))
    m = m[:, np.flatnonzero(keep)].tocsr()
    m.sort_indices()
    names = [n for n, k in zip(names, keep) if k]
    ids = [n for n, k in zip(ids, keep) if k]
    return describe(out, m, names, ids, strings(g["barcodes"]), None)


def read_lines(path):
    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rt") as fh:
        return [l.rstrip("\r\n").split("\t") for l in fh if l.strip()]


def case_mex(name, rel, folder):
    d = os.path.join(DATA, folder)
    mtx = [p for p in ("matrix.mtx", "matrix.mtx.gz") if os.path.exists(os.path.join(d, p))][0]
    feats = [p for p in ("features.tsv.gz", "features.tsv", "genes.tsv", "genes.tsv.gz") if os.path.exists(os.path.join(d, p))][0]
    bcs = [p for p in ("barcodes.tsv.gz", "barcodes.tsv") if os.path.exists(os.path.join(d, p))][0]
    coo = scipy.io.mmread(os.path.join(d, mtx))  # genes x cells
    m = sp.csr_matrix(coo.T.astype(np.float32))
    m.sort_indices()
    f = read_lines(os.path.join(d, feats))
    b = read_lines(os.path.join(d, bcs))
    out = dict(name=name, path=rel, format="10x-mex", no_labels=True)
    return describe(out, m, [r[1] if len(r) > 1 else r[0] for r in f], [r[0] for r in f], [r[0] for r in b], None)


def describe(out, m, genes, ids, barcodes, labels):
    m = m.tocsr()
    n, g = m.shape
    assert len(genes) == g and len(barcodes) == n
    indptr = m.indptr.astype("<i8")
    rownnz = np.diff(indptr).astype("<i8")
    h = hashlib.sha256()
    h.update(indptr.tobytes())
    h.update(m.indices.astype("<i4").tobytes())
    h.update(m.data.astype("<f4").tobytes())
    rowsum = [float(np.sum(m.data[indptr[i]:indptr[i + 1]].astype(np.float64))) for i in range(min(n, 10))]
    samples = []
    for r in sorted({0, n // 3, n // 2, n - 1}):
        lo, hi = indptr[r], indptr[r + 1]
        if hi > lo:
            for k in sorted({lo, (lo + hi) // 2, hi - 1}):
                samples.append([int(r), int(m.indices[k]), float(m.data[k])])
        zero = [j for j in range(g) if j not in set(m.indices[lo:hi].tolist())][:1]
        for j in zero:
            samples.append([int(r), int(j), 0.0])
    out.update(
        shape=[n, g], nnz=int(m.nnz),
        genes_head=genes[:3], genes_tail=genes[-3:], genes_sha=sha_strings(genes),
        gene_ids_sha=sha_strings(ids) if ids is not None else "",
        barcodes_head=barcodes[:3], barcodes_tail=barcodes[-3:], barcodes_sha=sha_strings(barcodes),
        row_nnz_sha=hashlib.sha256(rownnz.tobytes()).hexdigest(), row_nnz_head=[int(v) for v in rownnz[:10]],
        row_sum_head=rowsum, data_sha=h.hexdigest(), samples=samples,
        total_sum=float(m.data.astype(np.float64).sum()),
    )
    if labels is not None:
        assert len(labels) == n
        u, c = np.unique(np.array(labels, dtype=object), return_counts=True)
        out.update(labels_head=labels[:3], labels_tail=labels[-3:], labels_sha=sha_strings(labels),
                   label_counts={str(k): int(v) for k, v in zip(u, c)})
    return out


F = "format_fixtures/"


def main():
    global DATA
    DATA = data_dir()
    write_expected()


def write_expected():
    A8 = F + "anndata_0.8_written/"
    cases = [
        case_plain("pbmc4k_plain", "pbmc4k_scdcc/10X_PBMC_top2000.h5"),
        case_h5ad("pbmc68k_reduced_X", "pbmc68k_reduced/10x_pbmc68k_reduced.h5ad", "bulk_labels"),
        case_h5ad("pbmc68k_reduced_raw", "pbmc68k_reduced/10x_pbmc68k_reduced.h5ad", "bulk_labels", use_raw=True),
        case_h5ad("pbmc68k_counts_csr", A8 + "pbmc68k_counts_csr.h5ad", "bulk_labels"),
        case_h5ad("pbmc68k_counts_csr_gzip", A8 + "pbmc68k_counts_csr_gzip.h5ad", "bulk_labels"),
        case_h5ad("pbmc68k_counts_csc", A8 + "pbmc68k_counts_csc.h5ad", "bulk_labels"),
        case_h5ad("pbmc68k_counts_dense_gzip", A8 + "pbmc68k_counts_dense_gzip.h5ad", "bulk_labels"),
        case_h5ad("pbmc4k_h5ad_csr_gzip", A8 + "pbmc4k_top2000_counts_csr_gzip.h5ad", "celltype"),
        case_h5ad("anndata070", F + "anndata_0.7_archives/v0.7.0/adata.h5ad", "obs_cat"),
        case_h5ad("anndata070_raw_ordered", F + "anndata_0.7_archives/v0.7.0/adata.h5ad", "cat_ordered", use_raw=True),
        case_h5ad("anndata078", F + "anndata_0.7_archives/v0.7.8/adata.h5ad", "obs_cat"),
        case_h5ad("anndata078_raw_int", F + "anndata_0.7_archives/v0.7.8/adata.h5ad", "int64", use_raw=True),
        case_10x_h5("tenx_v2", F + "10x/1.2.0/filtered_gene_bc_matrices_h5.h5", "hg19_chr21"),
        case_10x_h5("tenx_v2_multi_hg19", F + "10x/1.2.0/multiple_genomes.h5", "hg19_chr21"),
        case_10x_h5("tenx_v2_multi_another", F + "10x/1.2.0/multiple_genomes.h5", "another_genome"),
        case_10x_h5("tenx_v3", F + "10x/3.0.0/filtered_feature_bc_matrix.h5"),
        case_mex("mex_v2_parent", F + "10x/1.2.0/filtered_gene_bc_matrices", F + "10x/1.2.0/filtered_gene_bc_matrices/hg19_chr21"),
        case_mex("mex_v2", F + "10x/1.2.0/filtered_gene_bc_matrices/hg19_chr21", F + "10x/1.2.0/filtered_gene_bc_matrices/hg19_chr21"),
        case_mex("mex_v3", F + "10x/3.0.0/filtered_feature_bc_matrix", F + "10x/3.0.0/filtered_feature_bc_matrix"),
    ]
    # The multiple_genomes genome argument is needed only for the ambiguous file.
    for c in cases:
        if c["name"] == "tenx_v2":
            c["genome"] = ""
    with open("expected.json", "w") as fh:
        json.dump(cases, fh, indent=1, sort_keys=True)
        fh.write("\n")
    print(f"wrote {len(cases)} cases to expected.json")


if __name__ == "__main__":
    main()
