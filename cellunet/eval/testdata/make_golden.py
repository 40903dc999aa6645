#!/usr/bin/python3
"""Golden values for the evaluation metrics (package eval's tests), computed
independently of the Go code with numpy, scipy, scikit-learn and torch.

Run with Debian's /usr/bin/python3 (python3-numpy, python3-scipy,
python3-sklearn, python3-h5py, python3-torch) from this folder:

    GOTORCH_TESTDATA_DIR=/path/to/shared/data /usr/bin/python3 make_golden.py

Without GOTORCH_TESTDATA_DIR the data folder is <repo root>/../shared/data.
Writes golden.npz (np.savez_compressed): for every case "<case>__<key>"
arrays. The output is deterministic.

Cases:
  stats   vectors with ties: scipy rankdata/spearmanr/pearsonr, sklearn
          roc_auc_score.
  pca     a 300 x 120 sparse float32 matrix with rank-10 structure:
          sklearn PCA(10, svd_solver="arpack") (what scanpy's
          sc.tl.pca(svd_solver="arpack") runs on dense data).
  mmd     two 200 x 5 point sets: the reference's mmd_rbf
          (scDiffusion exp_script/script_static_eval.ipynb), run verbatim
          in torch float64.
  knn     300 x 20 points, a fixed 70/30 split: sklearn
          KNeighborsClassifier(n_neighbors=5) probabilities, accuracy, AUC.
  forest  800 x 10 points with partial separation, a fixed 75/25 split:
          sklearn RandomForestClassifier as the reference runs it
          (n_estimators=1000, max_depth=5, oob_score=True,
          class_weight="balanced") for random_state 1..8.
  logreg  400 x 6 standardised features, 4 classes: sklearn
          LogisticRegression(multinomial, lbfgs, C=1) run to convergence.
  pbmc    the bundled PBMC 4k data preprocessed as the reference loader
          does; "real" = even rows, "generated" = odd rows with every third
          gene scaled by 1.3 in count space (log1p(expm1(x)*1.3)); gene-mean
          SCC/PCC (scipy), joint sklearn PCA(50, arpack) in float64, and the
          reference's MMD formula (mmd_np, checked against mmd_rbf on the
          mmd case; mmd_rbf itself would need a [2n, 2n, 50] tensor) on the
          first n = min(n_real, n_gen) cells of each.
"""
import os
import sys

import h5py
import numpy as np
import scipy.sparse as sp
import scipy.stats as st
import torch
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.neighbors import KNeighborsClassifier

out = {}


def put(case, **kw):
    for k, v in kw.items():
        out[f"{case}__{k}"] = np.asarray(v)


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


# --- stats -----------------------------------------------------------------
rng = np.random.default_rng(11)
a = rng.integers(0, 6, 40).astype(np.float64)          # many ties
b = a * 0.5 + rng.integers(0, 3, 40)                   # ties, correlated
scores = rng.integers(0, 5, 60) / 4.0                  # tied scores
labels = rng.random(60) < 0.4
put("stats", a=a, b=b, ranks_a=st.rankdata(a), spearman=st.spearmanr(a, b).correlation,
    pearson=st.pearsonr(a, b)[0], scores=scores, labels=labels.astype(np.int64),
    auc=roc_auc_score(labels, scores))

# --- pca -------------------------------------------------------------------
n, g, r = 300, 120, 10
u = rng.normal(size=(n, r)) * np.linspace(6, 1.5, r)
v = rng.normal(size=(r, g))
x = np.maximum(u @ v / 3 + rng.normal(size=(n, g)) * 0.3 + 0.5, 0).astype(np.float32)
xs = sp.csr_matrix(x)
p = PCA(n_components=r, svd_solver="arpack", random_state=0)
scores = p.fit_transform(x.astype(np.float64))   # float64: a precise reference (scanpy runs float32)
put("pca", indptr=xs.indptr.astype(np.int64), indices=xs.indices.astype(np.int32), data=xs.data,
    shape=np.array(x.shape, np.int64), scores=scores.astype(np.float64), components=p.components_.astype(np.float64),
    singular=p.singular_values_.astype(np.float64), ratio=p.explained_variance_ratio_.astype(np.float64),
    mean=p.mean_.astype(np.float64))


# --- mmd: the reference's code, verbatim apart from the dtype ---------------
def guassian_kernel(source, target, kernel_mul=2.0, kernel_num=5, fix_sigma=None):
    n_samples = int(source.size()[0]) + int(target.size()[0])
    total = torch.cat([source, target], dim=0)
    total0 = total.unsqueeze(0).expand(int(total.size(0)), int(total.size(0)), int(total.size(1)))
    total1 = total.unsqueeze(1).expand(int(total.size(0)), int(total.size(0)), int(total.size(1)))
    L2_distance = ((total0 - total1) ** 2).sum(2)
    if fix_sigma:
        bandwidth = fix_sigma
    else:
        bandwidth = torch.sum(L2_distance.data) / (n_samples ** 2 - n_samples)
    bandwidth /= kernel_mul ** (kernel_num // 2)
    bandwidth_list = [bandwidth * (kernel_mul ** i) for i in range(kernel_num)]
    kernel_val = [torch.exp(-L2_distance / bandwidth_temp) for bandwidth_temp in bandwidth_list]
    return sum(kernel_val), bandwidth


def mmd_rbf(source, target, kernel_mul=2.0, kernel_num=5, fix_sigma=None):
    batch_size = int(source.size()[0])
    kernels, bw = guassian_kernel(source, target, kernel_mul=kernel_mul, kernel_num=kernel_num, fix_sigma=fix_sigma)
    XX = kernels[:batch_size, :batch_size]
    YY = kernels[batch_size:, batch_size:]
    XY = kernels[:batch_size, batch_size:]
    YX = kernels[batch_size:, :batch_size]
    loss = torch.mean(XX + YY - XY - YX)
    return float(loss), float(bw)


def mmd_np(x, y):
    """The same formula with scipy's pairwise distances (no [2n, 2n, d] tensor)."""
    from scipy.spatial.distance import cdist
    z = np.vstack([x, y])
    d = cdist(z, z, "sqeuclidean")
    nz = z.shape[0]
    bw = d.sum() / (nz * nz - nz) / 4
    k = sum(np.exp(-d / (bw * 2 ** i)) for i in range(5))
    n = x.shape[0]
    return float(np.mean(k[:n, :n] + k[n:, n:] - k[:n, n:] - k[n:, :n])), float(bw)


mx = rng.normal(size=(200, 5))
my = rng.normal(size=(200, 5)) * 1.2 + 0.3
m, bw = mmd_rbf(torch.tensor(mx), torch.tensor(my))
m2, bw2 = mmd_np(mx, my)
assert abs(m - m2) <= 1e-12 * abs(m) and abs(bw - bw2) <= 1e-12 * bw, (m, m2, bw, bw2)
put("mmd", x=mx, y=my, mmd=m, bandwidth=bw)

# --- knn -------------------------------------------------------------------
kx = np.vstack([rng.normal(size=(150, 20)), rng.normal(size=(150, 20)) * 1.1 + 0.15])
ky = np.r_[np.ones(150), np.zeros(150)].astype(np.int64)   # 1 = real
perm = rng.permutation(300)
tr, te = perm[90:], perm[:90]
knn = KNeighborsClassifier(n_neighbors=5).fit(kx[tr], ky[tr])
kp = knn.predict_proba(kx[te])[:, 1]
put("knn", x=kx, real=ky, train=tr.astype(np.int64), test=te.astype(np.int64), proba=kp,
    accuracy=accuracy_score(ky[te], knn.predict(kx[te])), auc=roc_auc_score(ky[te], kp))

# --- forest ----------------------------------------------------------------
fx = np.vstack([rng.normal(size=(500, 10)), rng.normal(size=(300, 10))])
fx[500:, :3] += 0.6                       # partly separable, unbalanced classes
fy = np.r_[np.ones(500), np.zeros(300)].astype(np.int64)
perm = rng.permutation(800)
tr, te = perm[200:], perm[:200]
acc, auc, oob = [], [], []
for seed in range(1, 9):   # the spread over seeds is what an independent implementation is compared with
    rf = RandomForestClassifier(n_estimators=1000, max_depth=5, oob_score=True, class_weight="balanced", random_state=seed)
    rf.fit(fx[tr], fy[tr])
    fp = rf.predict_proba(fx[te])[:, 1]
    acc.append(accuracy_score(fy[te], rf.predict(fx[te])))
    auc.append(roc_auc_score(fy[te], fp))
    oob.append(rf.oob_score_)
put("forest", x=fx, real=fy, train=tr.astype(np.int64), test=te.astype(np.int64),
    accuracy=np.array(acc), auc=np.array(auc), oob=np.array(oob))

# --- logreg ----------------------------------------------------------------
centers = rng.normal(size=(4, 6)) * 1.5
ly = rng.integers(0, 4, 400)
lx = centers[ly] + rng.normal(size=(400, 6))
lx = (lx - lx.mean(0)) / lx.std(0)
lr = LogisticRegression(C=1.0, multi_class="multinomial", solver="lbfgs", tol=1e-12, max_iter=100000).fit(lx, ly)
put("logreg", x=lx, y=ly.astype(np.int64), coef=lr.coef_, intercept=lr.intercept_, proba=lr.predict_proba(lx))

# --- pbmc: the reference's preprocessing, gene means, PCA and MMD ------------
with h5py.File(os.path.join(data_dir(), "pbmc4k_scdcc", "10X_PBMC_top2000.h5"), "r") as f:
    X = sp.csr_matrix(f["X"][:].astype(np.float32))
X = X[:, np.asarray((X > 0).sum(axis=0)).ravel() >= 3]                 # filter_genes(min_cells=3)
X = X[np.asarray((X > 0).sum(axis=1)).ravel() >= 10]                   # filter_cells(min_genes=10)
tot = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
X = sp.csr_matrix(X.multiply(1e4 / tot[:, None]).astype(np.float64))   # normalize_total, float64
X.data = np.log1p(X.data).astype(np.float32).astype(np.float64)        # log1p, one rounding to float32
X = sp.csr_matrix(X.astype(np.float32))
real = X[0::2].toarray()
gen = X[1::2].toarray().astype(np.float64)
scale = np.arange(X.shape[1]) % 3 == 0
gen[:, scale] = np.log1p(np.expm1(gen[:, scale]) * 1.3)
gen = gen.astype(np.float32)
rm, gm = real.astype(np.float64).mean(0), gen.astype(np.float64).mean(0)
allx = np.vstack([real, gen])
p = PCA(n_components=50, svd_solver="arpack", random_state=0)
sc = p.fit_transform(allx.astype(np.float64))
nn_ = min(real.shape[0], gen.shape[0])
m, bw = mmd_np(sc[:nn_].astype(np.float64), sc[real.shape[0]:real.shape[0] + nn_].astype(np.float64))
put("pbmc", n_real=real.shape[0], n_gen=gen.shape[0], genes=X.shape[1],
    spearman=st.spearmanr(rm, gm).correlation, pearson=np.corrcoef(rm, gm)[0, 1],
    singular=p.singular_values_.astype(np.float64), ratio=p.explained_variance_ratio_.astype(np.float64),
    score_abs_colsum=np.abs(sc.astype(np.float64)).sum(0), mmd=m, bandwidth=bw, mmd_n=nn_)

np.savez_compressed("golden.npz", **out)
print("wrote golden.npz:", len(out), "arrays")
