// Package eval judges generated single-cell expression against real cells
// with the metrics of the scDiffusion paper and notebooks (spec §8): the
// Spearman and Pearson correlation of per-gene means, the reference's
// multi-bandwidth RBF MMD on a joint 50-component PCA, real-vs-generated
// detectability by k-nearest neighbours and by a random forest (accuracy
// and ROC-AUC on held-out cells), and, for conditional generation, the
// per-label accuracy of an independent classifier trained on real cells
// only. Evaluate returns a Report (JSON, a summary table, and an SVG
// picture of both sets in one embedding).
//
// Everything is pure Go (gonum for BLAS/LAPACK), seeded and deterministic
// whatever the number of workers, and memory-conscious: expression stays
// sparse (CSR), pairwise distances are computed in tiles, never as
// [2n, 2n] matrices. Each metric is checked against numpy, scipy,
// scikit-learn or torch by golden tests (testdata/make_golden.py).
package eval
