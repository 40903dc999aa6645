package eval

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/lapack/lapack64"
	"gonum.org/v1/gonum/mat"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata"
)

// PCAOptions configures FitPCA.
type PCAOptions struct {
	// Components is the number of principal components (scanpy's default
	// n_comps = 50). It is reduced to min(rows, cols) − 1 when larger, as
	// ARPACK requires.
	Components int
	// Oversample extra directions are iterated along with the components
	// (default 2·Components): the subspace iteration converges at the rate
	// of σ_{l+1}/σ_k, so a wide block makes the last components accurate.
	Oversample int
	// Iterations is the number of power (subspace) iterations (default
	// 10).
	Iterations int
	// Seed seeds the random start block.
	Seed uint64
}

func (o PCAOptions) withDefaults() PCAOptions {
	if o.Components <= 0 {
		o.Components = 50
	}
	if o.Oversample <= 0 {
		o.Oversample = 2 * o.Components
	}
	if o.Iterations <= 0 {
		o.Iterations = 10
	}
	return o
}

// PCA is a fitted principal component analysis of centred data (scanpy's
// sc.tl.pca with zero_center=True: no scaling, the mean removed).
type PCA struct {
	// Mean is the column mean of the fitted data [G].
	Mean []float64
	// Components are the principal axes, one per row [k, G] (sklearn's
	// components_).
	Components *Dense
	// SingularValues are the singular values of the centred data [k].
	SingularValues []float64
	// ExplainedVariance is σ²/(n−1) per component [k].
	ExplainedVariance []float64
	// Scores are the fitted rows' coordinates (X − mean)·Vᵀ [n, k]
	// (scanpy's obsm["X_pca"]).
	Scores *Dense
}

// FitPCA computes the leading principal components of the rows of x (the
// mean is removed implicitly, so x stays sparse) by randomized block
// subspace iteration (Halko, Martinsson & Tropp 2011, algorithm 4.4 with a
// QR re-orthonormalisation after every product) followed by an exact SVD
// of the small projected matrix. With the default oversampling and
// iterations (l = 3k columns, 10 iterations) the results agree with
// ARPACK's (scanpy's svd_solver="arpack") to ~1e-6 relative where the
// spectrum has a gap after the k-th component; on PBMC 4k, whose spectrum
// decays slowly (σ₄₆..σ₅₀ within 1 %), the trailing singular values agree
// to ~1e-4 and the MMD on the 50 components to ~1e-3. Signs follow
// sklearn's svd_flip: the largest-magnitude score of every
// component is positive. Memory: a transposed copy of x (8 bytes per
// stored value) and a few [n, l] and [G, l] float64 blocks (l =
// Components + Oversample). Every product sums in a fixed order, so the
// result does not depend on the number of workers.
func FitPCA(x *scdata.CSR, opt PCAOptions) (*PCA, error) {
	opt = opt.withDefaults()
	n, g := x.Rows, x.Cols
	if n < 2 || g < 2 {
		return nil, fmt.Errorf("PCA needs at least 2 cells and 2 genes, got %d × %d", n, g)
	}
	k := min(opt.Components, min(n, g)-1)
	l := min(k+opt.Oversample, min(n, g))
	mean := GeneMeans(x)
	xt := transposeCSR(x)
	r := newRand(opt.Seed, streamPCA)

	// Xc·b and Xcᵀ·q without forming Xc = X − 1·meanᵀ.
	mulC := func(b *Dense) *Dense {
		y := mulCSR(x, b)
		subRow(y, gemvT(b, mean))
		return y
	}
	mulCT := func(q *Dense) *Dense {
		z := mulCSR(xt, q)
		s := colSums(q)
		for j := 0; j < g; j++ {
			floats.AddScaled(z.Row(j), -mean[j], s)
		}
		return z
	}
	omega := newDense(g, l)
	for i := range omega.Data {
		omega.Data[i] = r.NormFloat64()
	}
	// One QR per iteration, on the narrower side (genes or cells): the
	// block between two QRs has passed through Xc and Xcᵀ once each, so
	// its condition number stays near (σ₁/σ_l)², harmless in float64.
	y := mulC(omega)
	for it := 0; it < opt.Iterations; it++ {
		if n < g {
			orthonormalize(y)
		}
		z := mulCT(y)
		if n >= g {
			orthonormalize(z)
		}
		y = mulC(z)
	}
	orthonormalize(y)
	bt := mulCT(y) // (Qᵀ·Xc)ᵀ, [G, l]

	var svd mat.SVD
	if !svd.Factorize(mat.NewDense(g, l, bt.Data), mat.SVDThin) {
		return nil, fmt.Errorf("PCA: the SVD of the projected %d × %d matrix did not converge", g, l)
	}
	s := svd.Values(nil)
	var ub, vb mat.Dense
	svd.UTo(&ub) // [G, l]: right singular vectors of Qᵀ·Xc
	svd.VTo(&vb) // [l, l]: left singular vectors of Qᵀ·Xc

	p := &PCA{Mean: mean, Components: newDense(k, g), SingularValues: s[:k], ExplainedVariance: make([]float64, k)}
	// Scores = Q·Vb·S (first k columns).
	vbk := newDense(l, k)
	for i := 0; i < l; i++ {
		for c := 0; c < k; c++ {
			vbk.Data[i*k+c] = vb.At(i, c) * s[c]
		}
	}
	p.Scores = gemm(false, y, vbk)
	for c := 0; c < k; c++ {
		// svd_flip(u_based_decision=True): the entry of largest magnitude
		// in each column of U (the scores) is made positive.
		best, bi := -1.0, 0
		for i := 0; i < n; i++ {
			if a := math.Abs(p.Scores.Data[i*k+c]); a > best {
				best, bi = a, i
			}
		}
		sign := 1.0
		if p.Scores.Data[bi*k+c] < 0 {
			sign = -1
		}
		for i := 0; i < n; i++ {
			p.Scores.Data[i*k+c] *= sign
		}
		row := p.Components.Row(c)
		for j := 0; j < g; j++ {
			row[j] = sign * ub.At(j, c)
		}
		p.ExplainedVariance[c] = s[c] * s[c] / float64(n-1)
	}
	return p, nil
}

// NumComponents is the number of fitted components.
func (p *PCA) NumComponents() int { return p.Components.Rows }

// Transform projects the rows of x (same genes as the fitted data) on the
// components: (x − Mean)·Componentsᵀ, [x.Rows, k].
func (p *PCA) Transform(x *scdata.CSR) *Dense {
	vt := transpose(p.Components) // [G, k]
	y := mulCSR(x, vt)
	subRow(y, gemvT(vt, p.Mean))
	return y
}

// gemvT returns bᵀ·v for b [G, l] and v [G]: the row vector vᵀ·b [l].
func gemvT(b *Dense, v []float64) []float64 {
	out := make([]float64, b.Cols)
	for j := 0; j < b.Rows; j++ {
		if v[j] != 0 {
			floats.AddScaled(out, v[j], b.Row(j))
		}
	}
	return out
}

func transpose(m *Dense) *Dense {
	t := newDense(m.Cols, m.Rows)
	for i := 0; i < m.Rows; i++ {
		for j := 0; j < m.Cols; j++ {
			t.Data[j*m.Rows+i] = m.Data[i*m.Cols+j]
		}
	}
	return t
}

// orthonormalize replaces the columns of a (rows >= cols) by an
// orthonormal basis of their span (Householder QR, LAPACK dgeqrf+dorgqr).
func orthonormalize(a *Dense) {
	g := a.general()
	tau := make([]float64, a.Cols)
	work := make([]float64, 1)
	lapack64.Geqrf(g, tau, work, -1)
	lw := int(work[0])
	lapack64.Orgqr(g, tau, work, -1)
	lw = max(lw, int(work[0]), a.Cols)
	work = make([]float64, lw)
	lapack64.Geqrf(g, tau, work, lw)
	lapack64.Orgqr(g, tau, work, lw)
}
