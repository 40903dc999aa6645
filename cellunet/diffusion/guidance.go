package diffusion

import (
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// Classifier predicts class logits [B,K] float32 from x_t [B,D] float32 and
// the original (base-schedule) steps t [B] int64, like the reference's
// Cell_classifier. Put it in evaluation mode before guiding (the reference
// guides with eval-mode BatchNorm and no dropout).
type Classifier interface {
	Forward(x, t *ct.Tensor) *ct.Tensor
}

// ClassifierTerm is one classifier's contribution to a guidance gradient:
// Scale·∇_x log softmax(Classifier(x,t))[Labels].
type ClassifierTerm struct {
	Classifier Classifier
	// Labels are the target classes y [B] int64 on the classifier's device
	// (read, never freed). For the reference's multi-condition y [B,2],
	// give one term y[:,0] and the other y[:,1].
	Labels *ct.Tensor
	// Scale is the classifier scale s (the reference's default is 2; the
	// multi-condition script uses weight·2/10 per classifier).
	Scale float64
}

// ClassifierGuidance returns the GuidanceFunc
//
//	g(x,t) = Σ_k s_k·∇_x Σ_b log softmax(c_k(x,t))[b, y_k[b]]
//
// (spec §6): one term is classifier_sample.py's cond_fn, two terms its
// multi-condition cond_fn (g = s1·∇log p1 + s2·∇log p2). Each gradient is
// taken at one detached copy of x with autograd enabled (even inside the
// sampler's no-grad), with torch.autograd.grad semantics: no parameter
// .grad is touched and each term's graph is freed after its gradient (no
// retain_graph). The result [B,D] float32 joins x's scope (unowned if x
// is); all intermediates are freed. It panics with *cgotorch.Error on
// tensor failure, which the sampling loops return as an error. With no
// terms g = 0.
func ClassifierGuidance(terms ...ClassifierTerm) GuidanceFunc {
	terms = append([]ClassifierTerm(nil), terms...)
	return func(x, t *ct.Tensor) *ct.Tensor {
		sc := ct.NewScope()
		defer sc.Close()
		var g *ct.Tensor
		ct.WithGradMode(true, func() {
			xin := x.Alias(sc).Detach().SetRequiresGrad(true)
			ta := t.Alias(sc)
			for _, term := range terms {
				gk := logProbGrad(sc, term, xin, ta)
				if g == nil {
					g = gk
				} else {
					g = g.Add(gk)
				}
			}
		})
		if g == nil {
			g = sc.Zeros(ct.On(x.Device()), x.Shape()...)
		}
		return g.Detach().MoveTo(x.Scope())
	}
}

// logProbGrad is s·∂(Σ_b log softmax(c(x,t))[b, y_b])/∂x, in sc.
func logProbGrad(sc *ct.Scope, term ClassifierTerm, xin, t *ct.Tensor) *ct.Tensor {
	logits := sc.Adopt(term.Classifier.Forward(xin, t))
	y := term.Labels.Alias(sc).View(-1, 1)
	selected := logits.LogSoftmax(-1).Gather(1, y).Sum()
	return ct.GradOf(selected, xin).MulScalar(term.Scale)
}
