package cgotorch

/*
#include "cgotorch.h"
*/
import "C"

// LayerNormSiLU_ replaces t [..., C] by SiLU(LayerNorm(t)) over its last
// dimension, with weight w and bias b [C] and epsilon eps (mean and biased
// variance per row, as torch.nn.LayerNorm followed by SiLU), in place. For
// contiguous float32 CPU tensors it is one pass over memory (the two
// libtorch ops make two, plus an allocation); elsewhere it runs those ops.
// Inference only: it panics with an *Error if grad mode is on and an
// input requires grad. Values equal the two ops' to float rounding.
func (t *Tensor) LayerNormSiLU_(w, b *Tensor, eps float64) *Tensor {
	must("layer_norm_silu_", C.cgt_layer_norm_silu_(t.handle("layer_norm_silu_"), w.handle("layer_norm_silu_"),
		b.handle("layer_norm_silu_"), C.double(eps)))
	return t
}
