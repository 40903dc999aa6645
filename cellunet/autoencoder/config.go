package autoencoder

import (
	"fmt"
	"slices"
)

// Config describes the autoencoder's architecture. Use DefaultConfig(genes)
// for the reference's construction; the zero value is not valid.
type Config struct {
	// Genes is G, the input and output width (the number of genes after
	// filtering). Required: it must equal the data's column count and a
	// checkpoint's gene count.
	Genes int64
	// Hidden are the encoder's block widths; the decoder uses them reversed
	// (VAE_model.py passes list(reversed(hidden_dim))). Default
	// [1024, 1024, 1024].
	Hidden []int64
	// Latent is the latent width (default 128).
	Latent int64
	// Dropout is the probability of the Dropout at the start of every
	// block except the first encoder block and the first decoder block
	// (reference 0). It only acts in Training mode.
	Dropout float64
	// InputDropout is the probability of the first encoder block's Dropout,
	// on the expression input (reference 0). It only acts in Training mode.
	InputDropout float64
}

// DefaultConfig is the reference's autoencoder for the given gene count:
// hidden [1024, 1024, 1024], latent 128, no dropout. For G = 13,431 it has
// 31,995,133 parameters (128 MB as float32).
func DefaultConfig(genes int64) Config {
	return Config{Genes: genes, Hidden: []int64{1024, 1024, 1024}, Latent: 128}
}

// Validate reports configuration errors.
func (c Config) Validate() error {
	if c.Genes <= 0 {
		return fmt.Errorf("autoencoder: gene count must be positive, got %d", c.Genes)
	}
	if c.Latent <= 0 {
		return fmt.Errorf("autoencoder: latent width must be positive, got %d", c.Latent)
	}
	if len(c.Hidden) == 0 {
		return fmt.Errorf("autoencoder: need at least one hidden width")
	}
	for _, h := range c.Hidden {
		if h <= 0 {
			return fmt.Errorf("autoencoder: hidden widths must be positive, got %v", c.Hidden)
		}
	}
	for _, p := range []float64{c.Dropout, c.InputDropout} {
		if p < 0 || p >= 1 {
			return fmt.Errorf("autoencoder: dropout probabilities must be in [0, 1), got %v and %v", c.Dropout, c.InputDropout)
		}
	}
	return nil
}

// decoderHidden is Hidden reversed.
func (c Config) decoderHidden() []int64 {
	h := slices.Clone(c.Hidden)
	slices.Reverse(h)
	return h
}

// NumParams is the number of trainable parameters, computed from the
// shapes without allocating: every block holds in·out + out (Linear) +
// 2·out (BatchNorm weight and bias) + 1 (PReLU); the output layers hold
// in·out + out. BatchNorm buffers (running_mean, running_var,
// num_batches_tracked) are not parameters.
func (c Config) NumParams() int64 {
	stack := func(in int64, hidden []int64, out int64) int64 {
		var n int64
		for _, h := range hidden {
			n += in*h + h + 2*h + 1
			in = h
		}
		return n + in*out + out
	}
	return stack(c.Genes, c.Hidden, c.Latent) + stack(c.Latent, c.decoderHidden(), c.Genes)
}
