package nn

import (
	"math"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// Layer is a module with one input and one output. Forward's result joins
// the scope of x.
type Layer interface {
	Forward(x *ct.Tensor) *ct.Tensor
}

// TrainSetter is implemented by layers whose behaviour differs between
// training and evaluation (BatchNorm1d, Dropout, Sequential).
type TrainSetter interface {
	SetTraining(training bool)
}

// LinearConfig configures NewLinear. The zero value has no bias; use
// DefaultLinearConfig for PyTorch's default (bias on).
type LinearConfig struct {
	Bias bool
}

// DefaultLinearConfig is nn.Linear's default: with bias.
func DefaultLinearConfig() LinearConfig { return LinearConfig{Bias: true} }

// Linear is y = x·Wᵀ + b with W [Out, In] and b [Out] (torch.nn.Linear,
// same initialisation). x: [..., In] → [..., Out].
type Linear struct {
	W, B    *Param // B is nil without bias
	In, Out int64
}

// NewLinear creates "weight" and (optionally) "bias" under p.
func NewLinear(p Path, in, out int64, cfg LinearConfig) *Linear {
	l := &Linear{In: in, Out: out}
	l.W = p.Param("weight", KaimingUniform(math.Sqrt(5), in), out, in)
	if cfg.Bias {
		l.B = p.Param("bias", LinearBiasInit(in), out)
	}
	return l
}

// Forward applies the layer.
func (l *Linear) Forward(x *ct.Tensor) *ct.Tensor {
	var b *ct.Tensor
	if l.B != nil {
		b = l.B.T
	}
	return x.Linear(l.W.T, b)
}

// LayerNorm normalises over the trailing Shape dims with an elementwise
// affine transform (weight 1, bias 0 at init), as torch.nn.LayerNorm.
type LayerNorm struct {
	W, B  *Param
	Shape []int64
	Eps   float64
}

// NewLayerNorm creates "weight" and "bias" of the given normalised shape,
// eps 1e-5.
func NewLayerNorm(p Path, shape ...int64) *LayerNorm {
	return &LayerNorm{
		W:     p.Param("weight", Ones, shape...),
		B:     p.Param("bias", Zeros, shape...),
		Shape: shape,
		Eps:   1e-5,
	}
}

// Forward applies the layer.
func (l *LayerNorm) Forward(x *ct.Tensor) *ct.Tensor {
	return x.LayerNorm(l.Shape, l.W.T, l.B.T, l.Eps)
}

// BatchNorm1d normalises [B, C] (or [B, C, L]) over the batch, as
// torch.nn.BatchNorm1d with affine weights and running statistics
// (momentum 0.1, eps 1e-5). In training mode it uses the batch mean and
// biased variance and updates running_mean, running_var (unbiased) and
// num_batches_tracked; in eval mode it uses the running statistics.
type BatchNorm1d struct {
	W, B, RunningMean, RunningVar, NumBatchesTracked *Param
	Momentum, Eps                                    float64
	Training                                         bool
}

// NewBatchNorm1d creates the parameters and buffers of a BatchNorm1d over C
// features, in training mode.
func NewBatchNorm1d(p Path, c int64) *BatchNorm1d {
	return &BatchNorm1d{
		W:                 p.Param("weight", Ones, c),
		B:                 p.Param("bias", Zeros, c),
		RunningMean:       p.Buffer("running_mean", ct.Float32, Zeros, c),
		RunningVar:        p.Buffer("running_var", ct.Float32, Ones, c),
		NumBatchesTracked: p.Buffer("num_batches_tracked", ct.Int64, Zeros),
		Momentum:          0.1,
		Eps:               1e-5,
		Training:          true,
	}
}

// SetTraining switches between batch statistics (true) and running statistics.
func (l *BatchNorm1d) SetTraining(training bool) { l.Training = training }

// Forward applies the layer.
func (l *BatchNorm1d) Forward(x *ct.Tensor) *ct.Tensor {
	if l.Training {
		ct.NoGrad(func() { l.NumBatchesTracked.T.AddScalar_(1) })
	}
	return x.BatchNorm(l.W.T, l.B.T, l.RunningMean.T, l.RunningVar.T, l.Training, l.Momentum, l.Eps)
}

// ForwardWithStats normalises x with given per-feature mean and (biased)
// variance instead of batch or running statistics, leaving the buffers
// untouched; used for dataset-wide statistics computed in chunks.
func (l *BatchNorm1d) ForwardWithStats(x, mean, variance *ct.Tensor) *ct.Tensor {
	return x.BatchNorm(l.W.T, l.B.T, mean, variance, false, 0, l.Eps)
}

// PReLU is max(0,x) + w·min(0,x) with one learned slope (init 0.25), as
// torch.nn.PReLU().
type PReLU struct {
	W *Param
}

// NewPReLU creates "weight" [1] = 0.25.
func NewPReLU(p Path) *PReLU { return &PReLU{W: p.Param("weight", Constant(0.25), 1)} }

// Forward applies the layer.
func (l *PReLU) Forward(x *ct.Tensor) *ct.Tensor { return x.PReLU(l.W.T) }

// SiLU is x·sigmoid(x).
type SiLU struct{}

// Forward applies the activation.
func (SiLU) Forward(x *ct.Tensor) *ct.Tensor { return x.SiLU() }

// ReLU is max(0, x).
type ReLU struct{}

// Forward applies the activation.
func (ReLU) Forward(x *ct.Tensor) *ct.Tensor { return x.ReLU() }

// Dropout zeroes inputs with probability P in training mode (scaling the
// rest by 1/(1-P)); identity in eval mode or when P is 0.
type Dropout struct {
	P        float64
	Training bool
	// Gen is the generator for the masks; nil uses libtorch's default.
	Gen *ct.Generator
}

// NewDropout returns a Dropout in training mode.
func NewDropout(p float64) *Dropout { return &Dropout{P: p, Training: true} }

// SetTraining switches dropout on (true) or off.
func (l *Dropout) SetTraining(training bool) { l.Training = training }

// Forward applies the layer. With P == 0 it returns a new handle to x.
func (l *Dropout) Forward(x *ct.Tensor) *ct.Tensor {
	return x.Dropout(l.P, l.Training, l.Gen)
}

// Sequential applies layers in order; in PyTorch's naming its children are
// "0", "1", ... (use Path.At to create them).
type Sequential struct {
	Layers []Layer
}

// NewSequential returns a Sequential of the given layers.
func NewSequential(layers ...Layer) *Sequential { return &Sequential{Layers: layers} }

// Forward applies every layer; intermediate results join x's scope.
func (s *Sequential) Forward(x *ct.Tensor) *ct.Tensor {
	for _, l := range s.Layers {
		x = l.Forward(x)
	}
	return x
}

// SetTraining propagates the mode to every child that has one.
func (s *Sequential) SetTraining(training bool) {
	for _, l := range s.Layers {
		if t, ok := l.(TrainSetter); ok {
			t.SetTraining(training)
		}
	}
}
