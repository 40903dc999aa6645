package nn

import (
	"math"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// Init fills a freshly created CPU tensor in place (under no-grad).
type Init func(t *ct.Tensor)

// Zeros initialises to 0.
func Zeros(t *ct.Tensor) { t.Zero_() }

// Ones initialises to 1.
func Ones(t *ct.Tensor) { t.Fill_(1) }

// Constant initialises every element to v.
func Constant(v float64) Init { return func(t *ct.Tensor) { t.Fill_(v) } }

// Uniform initialises from U(lo, hi) with libtorch's default CPU generator.
func Uniform(lo, hi float64) Init { return func(t *ct.Tensor) { t.Uniform_(lo, hi, nil) } }

// KaimingUniform is torch.nn.init.kaiming_uniform_ with negative slope a,
// fan_in mode and leaky_relu gain: bound = √3·gain/√fan_in, gain =
// √(2/(1+a²)), computed in the same order as PyTorch so the bound (and hence
// every drawn value) is bit-identical. With a = √5 (nn.Linear's default) the
// bound is 1/√fan_in.
func KaimingUniform(a float64, fanIn int64) Init {
	gain := math.Sqrt(2.0 / (1 + a*a))
	std := gain / math.Sqrt(float64(fanIn))
	bound := math.Sqrt(3.0) * std
	return Uniform(-bound, bound)
}

// LinearBiasInit is nn.Linear's bias initialisation: U(±1/√fan_in).
func LinearBiasInit(fanIn int64) Init {
	bound := 0.0
	if fanIn > 0 {
		bound = 1 / math.Sqrt(float64(fanIn))
	}
	return Uniform(-bound, bound)
}
