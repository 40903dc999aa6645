package eval

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/floats"
)

// LogReg is a multinomial logistic regression (softmax) classifier:
// p(c | x) ∝ exp(W_c·x + B_c).
type LogReg struct {
	Classes, Features int
	W                 []float64 // [Classes, Features], row-major
	B                 []float64 // [Classes]
}

// FitLogReg fits a multinomial logistic regression with an L2 penalty on
// the weights (not the intercepts) by L-BFGS, minimising
// C·Σ_i −log p(y_i | x_i) + ½‖W‖² — scikit-learn's
// LogisticRegression(multi_class="multinomial", solver="lbfgs", C=c),
// run to convergence (max |gradient| <= 1e-10·max(1, C·n), no further
// decrease, or 2,000 iterations). y holds class ids in [0, k); classes without rows get
// weights driven by the penalty alone.
func FitLogReg(x *Dense, y []int, k int, c float64) (*LogReg, error) {
	n, d := x.Rows, x.Cols
	if n == 0 || len(y) != n || k < 2 || c <= 0 {
		return nil, fmt.Errorf("logistic regression: need rows with one class each, at least 2 classes and C > 0 (got %d rows, %d classes, %d labels, C %v)", n, k, len(y), c)
	}
	for _, v := range y {
		if v < 0 || v >= k {
			return nil, fmt.Errorf("logistic regression: class %d outside [0, %d)", v, k)
		}
	}
	np := k*d + k
	// Rows are summed in fixed chunks, each chunk's gradient in its own
	// buffer, and the chunks combined in order: the sums do not depend on
	// the number of workers.
	const chunk = 512
	nc := (n + chunk - 1) / chunk
	grads := make([][]float64, nc)
	for i := range grads {
		grads[i] = make([]float64, np)
	}
	losses := make([]float64, nc)
	eval := func(theta, grad []float64) float64 {
		wts, b := theta[:k*d], theta[k*d:]
		parallelFor(nc, func(lo, hi int) {
			z := make([]float64, k)
			for ch := lo; ch < hi; ch++ {
				g := grads[ch]
				for i := range g {
					g[i] = 0
				}
				var loss float64
				for i := ch * chunk; i < min(n, (ch+1)*chunk); i++ {
					xi := x.Row(i)
					for cl := 0; cl < k; cl++ {
						z[cl] = floats.Dot(wts[cl*d:(cl+1)*d], xi) + b[cl]
					}
					m := floats.Max(z)
					zy := z[y[i]] - m
					var s float64
					for cl := range z {
						z[cl] = math.Exp(z[cl] - m)
						s += z[cl]
					}
					loss += math.Log(s) - zy
					if grad != nil {
						for cl := range z {
							p := z[cl] / s
							if cl == y[i] {
								p--
							}
							floats.AddScaled(g[cl*d:(cl+1)*d], p, xi)
							g[k*d+cl] += p
						}
					}
				}
				losses[ch] = loss
			}
		})
		loss := floats.Sum(losses) * c
		if grad != nil {
			for i := range grad {
				grad[i] = 0
			}
			for _, g := range grads {
				floats.AddScaled(grad, c, g)
			}
			floats.Add(grad[:k*d], wts)
		}
		return loss + 0.5*floats.Dot(wts, wts)
	}
	theta := make([]float64, np)
	lbfgs(theta, eval, 1e-10*math.Max(1, c*float64(n)), 2000)
	return &LogReg{Classes: k, Features: d, W: theta[:k*d], B: theta[k*d:]}, nil
}

// lbfgs minimises f from x (updated in place) by limited-memory BFGS (10
// pairs) with a backtracking Armijo line search, until max|∇f| <= gtol,
// the objective stops decreasing, or maxIter iterations. f(x, grad)
// returns the value and, when grad is non-nil, writes the gradient.
func lbfgs(x []float64, f func(x, grad []float64) float64, gtol float64, maxIter int) {
	const hist = 10
	n := len(x)
	g := make([]float64, n)
	fx := f(x, g)
	var ss, ys [][]float64
	var rho []float64
	d := make([]float64, n)
	xn := make([]float64, n)
	gn := make([]float64, n)
	alpha := make([]float64, hist)
	stall := 0
	for it := 0; it < maxIter; it++ {
		if floats.Norm(g, math.Inf(1)) <= gtol {
			return
		}
		// Two-loop recursion: d = −H·g.
		copy(d, g)
		for i := len(ss) - 1; i >= 0; i-- {
			alpha[i] = rho[i] * floats.Dot(ss[i], d)
			floats.AddScaled(d, -alpha[i], ys[i])
		}
		if k := len(ss); k > 0 {
			floats.Scale(floats.Dot(ss[k-1], ys[k-1])/floats.Dot(ys[k-1], ys[k-1]), d)
		} else {
			floats.Scale(1/math.Max(1, floats.Norm(g, 2)), d)
		}
		for i := range ss {
			b := rho[i] * floats.Dot(ys[i], d)
			floats.AddScaled(d, alpha[i]-b, ss[i])
		}
		floats.Scale(-1, d)
		gd := floats.Dot(g, d)
		if gd >= 0 { // not a descent direction: restart from the gradient
			ss, ys, rho = ss[:0], ys[:0], rho[:0]
			copy(d, g)
			floats.Scale(-1/math.Max(1, floats.Norm(g, 2)), d)
			gd = floats.Dot(g, d)
		}
		t := 1.0
		var fn float64
		for ls := 0; ; ls++ {
			floats.AddScaledTo(xn, x, t, d)
			fn = f(xn, gn)
			if fn <= fx+1e-4*t*gd || ls == 60 {
				break
			}
			t /= 2
		}
		if fn > fx { // no decrease along d at any step: converged to rounding
			return
		}
		s := make([]float64, n)
		y := make([]float64, n)
		floats.SubTo(s, xn, x)
		floats.SubTo(y, gn, g)
		if sy := floats.Dot(s, y); sy > 1e-12*floats.Norm(s, 2)*floats.Norm(y, 2) {
			if len(ss) == hist {
				ss, ys, rho = ss[1:], ys[1:], rho[1:]
			}
			ss, ys, rho = append(ss, s), append(ys, y), append(rho, 1/sy)
		}
		if fx-fn <= 1e-15*math.Abs(fx) {
			stall++
			if stall >= 5 {
				copy(x, xn)
				return
			}
		} else {
			stall = 0
		}
		copy(x, xn)
		copy(g, gn)
		fx = fn
	}
}

// Proba returns the class probabilities of every row of x, [rows, Classes].
func (m *LogReg) Proba(x *Dense) *Dense {
	out := newDense(x.Rows, m.Classes)
	parallelFor(x.Rows, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			z := out.Row(i)
			for cl := range z {
				z[cl] = floats.Dot(m.W[cl*m.Features:(cl+1)*m.Features], x.Row(i)) + m.B[cl]
			}
			mx := floats.Max(z)
			var s float64
			for cl := range z {
				z[cl] = math.Exp(z[cl] - mx)
				s += z[cl]
			}
			floats.Scale(1/s, z)
		}
	})
	return out
}

// Predict returns the most probable class of every row (the first on
// ties, as numpy's argmax).
func (m *LogReg) Predict(x *Dense) []int {
	p := m.Proba(x)
	out := make([]int, x.Rows)
	for i := range out {
		out[i] = floats.MaxIdx(p.Row(i))
	}
	return out
}

// Standardizer centres and scales features to unit variance (population
// standard deviation, sklearn's StandardScaler; constant features are
// only centred).
type Standardizer struct{ Mean, Scale []float64 }

// FitStandardizer computes the column means and standard deviations of x.
func FitStandardizer(x *Dense) Standardizer {
	s := Standardizer{Mean: colSums(x), Scale: make([]float64, x.Cols)}
	floats.Scale(1/float64(x.Rows), s.Mean)
	for i := 0; i < x.Rows; i++ {
		for j, v := range x.Row(i) {
			d := v - s.Mean[j]
			s.Scale[j] += d * d
		}
	}
	for j := range s.Scale {
		s.Scale[j] = math.Sqrt(s.Scale[j] / float64(x.Rows))
		if s.Scale[j] == 0 {
			s.Scale[j] = 1
		}
	}
	return s
}

// Apply returns the standardised copy of x.
func (s Standardizer) Apply(x *Dense) *Dense {
	out := newDense(x.Rows, x.Cols)
	for i := 0; i < x.Rows; i++ {
		r := out.Row(i)
		for j, v := range x.Row(i) {
			r[j] = (v - s.Mean[j]) / s.Scale[j]
		}
	}
	return out
}
