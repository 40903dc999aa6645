package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/scdiffusion/gotorch-train/cellunet"
	"github.com/scdiffusion/gotorch-train/cellunet/diffusion"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/nn"
)

// sampleModel is the benchmark's Cell_Unet: the default one after
// ManualSeed(0) (PyTorch's weights after torch.manual_seed(0)), or a
// checkpoint.
func sampleModel(path string) (*cellunet.Loaded, error) {
	if path != "" {
		return cellunet.Load(path, ct.CPU)
	}
	if err := ct.ManualSeed(0); err != nil {
		return nil, err
	}
	st := nn.NewStore(ct.CPU)
	m, err := cellunet.New(st.Root(), cellunet.DefaultConfig())
	if err != nil {
		st.Close()
		return nil, err
	}
	m.SetTraining(false)
	return &cellunet.Loaded{Model: m, Store: st}, nil
}

func precisionDType(p string) (ct.DType, error) {
	switch p {
	case "fp32":
		return ct.Float32, nil
	case "bf16":
		return ct.BFloat16, nil
	}
	return 0, fmt.Errorf("precision %q: want fp32 or bf16", p)
}

// benchSample: the ancestral sampling loop of gotorch-train sample
// (diffusion.PSampleLoop with the backbone's shared-step forward, noise
// weight 0.5, no clipping) on batch B: warmup steps, then steps timed steps
// ending at t = 0, as scripts/bench/sample_ref.py times the reference's.
func benchSample(warmup, steps, batch int, precision, modelPath string) (map[string]any, error) {
	dt, err := precisionDType(precision)
	if err != nil {
		return nil, err
	}
	m, err := sampleModel(modelPath)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	var model diffusion.Model = m.Model
	if dt != ct.Float32 {
		mx, err := cellunet.NewMixed(m.Model, dt)
		if err != nil {
			return nil, err
		}
		defer mx.Close()
		model = mx
	}
	d, err := diffusion.New(diffusion.DefaultConfig(), ct.CPU)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	g, err := ct.NewGenerator(ct.CPU, 1234)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	var t0 time.Time
	var c0 float64
	x, err := d.PSampleLoop(model, []int64{int64(batch), 128}, diffusion.SampleOptions{Generator: g, StartTime: warmup + steps,
		Progress: func(p diffusion.Progress) error {
			if p.Done == warmup {
				t0, c0 = time.Now(), cpuSeconds()
			}
			return nil
		}})
	if err != nil {
		return nil, err
	}
	el, cpu := time.Since(t0).Seconds(), cpuSeconds()-c0
	var finite bool
	err = ct.Try(func() { finite = x.IsFinite().All().Item() != 0 })
	x.Free()
	if err != nil {
		return nil, err
	}
	return map[string]any{"bench": "sample", "batch": batch, "steps": steps, "seconds": el, "ms_per_step": 1e3 * el / float64(steps),
		"cells_steps_per_s": float64(batch*steps) / el, "cpu_seconds": cpu, "cpu_ms_per_step": 1e3 * cpu / float64(steps),
		"finite": finite, "precision": precision}, nil
}

// benchSampleGEMM times only the matrix products of the same loop's
// forward passes, steps times: with forward "shared" those ForwardAt makes
// (every fc, out1 and out2 at batch B with the time term in the bias; the
// time embedding and the 7 emb_layers on one row); with "full" those of
// the reference's forward (all 18 Linears at batch B).
func benchSampleGEMM(warmup, steps, batch int, precision, forward string) (map[string]any, error) {
	dt, err := precisionDType(precision)
	if err != nil {
		return nil, err
	}
	m, err := sampleModel("")
	if err != nil {
		return nil, err
	}
	defer m.Close()
	type linear struct {
		w, b *ct.Tensor
		rows int64
	}
	var ls []linear
	for _, p := range m.Store.Params() {
		if p.T.NDim() != 2 {
			continue
		}
		bias, _ := m.Store.Lookup(strings.TrimSuffix(p.Name, "weight") + "bias")
		rows := int64(batch)
		timeTerm := strings.HasPrefix(p.Name, "time_embedding") || strings.Contains(p.Name, "emb_layer")
		switch {
		case forward == "shared" && timeTerm:
			rows = 1
		case forward != "shared" && forward != "full":
			return nil, fmt.Errorf("forward %q: want shared or full", forward)
		}
		ls = append(ls, linear{p.T, bias.T, rows})
	}
	s := ct.NewScope()
	defer s.Close()
	var xs []*ct.Tensor
	err = ct.Try(func() {
		for _, l := range ls {
			xs = append(xs, s.Randn(ct.Options{}, nil, l.rows, l.w.Dim(1)))
		}
	})
	if err != nil {
		return nil, err
	}
	// In bf16 the batch products take bf16 inputs and weights (the casts
	// around them are not matrix products); the one-row ones stay fp32.
	err = ct.Try(func() {
		for i, l := range ls {
			if dt != ct.Float32 && l.rows > 1 {
				xs[i] = s.Adopt(xs[i].ToDType(dt))
				ls[i].w, ls[i].b = s.Adopt(l.w.Detach()).ToDType(dt), s.Adopt(l.b.Detach()).ToDType(dt)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	once := func() error {
		return ct.Try(func() {
			for i, l := range ls {
				xs[i].Linear(l.w, l.b).Free()
			}
		})
	}
	for range warmup {
		if err := once(); err != nil {
			return nil, err
		}
	}
	t0, c0 := time.Now(), cpuSeconds()
	for range steps {
		if err := once(); err != nil {
			return nil, err
		}
	}
	el, cpu := time.Since(t0).Seconds(), cpuSeconds()-c0
	return map[string]any{"bench": "sample-gemm", "batch": batch, "steps": steps, "seconds": el, "ms_per_step": 1e3 * el / float64(steps),
		"cpu_seconds": cpu, "cpu_ms_per_step": 1e3 * cpu / float64(steps), "linears": len(ls), "forward": forward, "precision": precision}, nil
}
