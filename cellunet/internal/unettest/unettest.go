// Package unettest holds what the tests of cellunet and its subpackages
// share about Cell_Unet's numerics: the accumulation lengths of its
// forward and backward passes for cgotorchtest's tolerance rule.
package unettest

import "github.com/scdiffusion/gotorch-train/cellunet"

// ForwardK is the accumulation length of Cell_Unet's forward pass (see the
// rule in cgotorch/cgotorchtest/tolerance.go): the longest chain of
// roundings from the inputs to an output element. The time embedding is two
// Linear layers of width hidden[0] after sin/cos; each ResidualBlock adds
// its fc (in) or its emb_layer (hidden[0], after the embedding), whichever
// chain is longer, a LayerNorm (mean, then variance over out) and SiLU; the
// decoder blocks add the skip connection; then out1 (hidden[0]), norm_out
// (2·2·hidden[1]), SiLU and out2 (2·hidden[1]).
func ForwardK(cfg cellunet.Config) int {
	h := cfg.Hidden
	h0 := int(h[0])
	emb := 2 + 2*h0 + 1
	chain := 0
	block := func(in, out int64) {
		chain = max(chain+int(in), emb+h0) + 2*int(out) + 2
	}
	block(cfg.InputDim, h[0])
	for i := 0; i+1 < len(h); i++ {
		block(h[i], h[i+1])
	}
	for i := len(h) - 2; i >= 0; i-- {
		block(h[i+1], h[i])
		chain++ // + the skip connection
	}
	return chain + h0 + 2*2*int(h[1]) + 1 + 2*int(h[1])
}

// GradK is the accumulation length of a parameter gradient of the
// per-sample ε-MSE averaged over a batch: the backward pass retraces the
// forward chain after the loss's mean over the input dimension, and a
// weight gradient sums over the batch.
func GradK(cfg cellunet.Config, batch int) int {
	return 2*ForwardK(cfg) + int(cfg.InputDim) + batch
}
