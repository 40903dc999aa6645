package cgotorch_test

import (
	"errors"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// TestFusedAdamWRefusesAMSGrad: the fused kernel has no max_exp_avg_sq, so
// it must refuse amsgrad instead of silently running plain AdamW.
func TestFusedAdamWRefusesAMSGrad(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	p, g := s.Ones(ct.Options{}, 8), s.Ones(ct.Options{}, 8)
	m, v := s.Zeros(ct.Options{}, 8), s.Zeros(ct.Options{}, 8)
	cfg := ct.DefaultAdamWConfig()
	cfg.AMSGrad = true
	err := ct.FusedAdamW(p, g, m, v, 1, cfg, ct.FusedStep{})
	if !errors.Is(err, ct.ErrInvalidArgument) || !strings.Contains(err.Error(), "amsgrad") {
		t.Fatalf("amsgrad: err %v, want an invalid-argument error naming amsgrad", err)
	}
	if got := p.Float32s(); got[0] != 1 {
		t.Errorf("the refused step changed the parameters: %v", got[0])
	}
}

// TestFusedAdamWBumpsVersionCounters: the fused step writes through raw
// pointers; every tensor it writes must count as modified in place, so a
// graph that saved one of them before the update refuses backward instead
// of computing a gradient from the overwritten values.
func TestFusedAdamWBumpsVersionCounters(t *testing.T) {
	const n = 40
	for _, tc := range []struct {
		name     string
		segments bool
		saved    func(p, g, m, v, ema, sumsq *ct.Tensor) *ct.Tensor
	}{
		{"param", false, func(p, g, m, v, ema, sumsq *ct.Tensor) *ct.Tensor { return p }},
		{"exp_avg", false, func(p, g, m, v, ema, sumsq *ct.Tensor) *ct.Tensor { return m }},
		{"exp_avg_sq", false, func(p, g, m, v, ema, sumsq *ct.Tensor) *ct.Tensor { return v }},
		{"ema", false, func(p, g, m, v, ema, sumsq *ct.Tensor) *ct.Tensor { return ema }},
		{"sumsq", false, func(p, g, m, v, ema, sumsq *ct.Tensor) *ct.Tensor { return sumsq }},
		{"zeroed grad", false, func(p, g, m, v, ema, sumsq *ct.Tensor) *ct.Tensor { return g }},
		{"zeroed grad segment", true, func(p, g, m, v, ema, sumsq *ct.Tensor) *ct.Tensor { return g }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := ct.NewScope()
			defer s.Close()
			p := s.Randn(ct.Options{}, nil, n).SetRequiresGrad(true)
			g := s.Randn(ct.Options{}, nil, n)
			m, v := s.Zeros(ct.Options{}, n), s.Zeros(ct.Options{}, n)
			ema := s.Zeros(ct.Options{}, n)
			sumsq := s.Zeros(ct.Of(ct.Float64), 2)
			saved := tc.saved(p, g, m, v, ema, sumsq)
			// x·saved saves `saved` for x's gradient (p·p saves p itself).
			var y *ct.Tensor
			if saved == p {
				y = p.Mul(p).Sum()
			} else {
				x := s.Ones(ct.Of(saved.DType()), saved.Numel()).SetRequiresGrad(true)
				y = x.Mul(saved).Sum()
			}
			fs := ct.FusedStep{EMAs: []*ct.Tensor{ema}, Rates: []float64{0.9}, SumSq: sumsq, ZeroGrad: true}
			flat := g
			if tc.segments {
				fs.Grads, fs.GradNumel, flat = []*ct.Tensor{g}, []int64{n}, nil
			}
			if err := ct.FusedAdamW(p, flat, m, v, 1, ct.DefaultAdamWConfig(), fs); err != nil {
				t.Fatal(err)
			}
			err := ct.Try(func() { y.Backward() })
			if err == nil || !strings.Contains(err.Error(), "inplace") {
				t.Fatalf("backward through a tensor the fused step overwrote: err %v, want autograd's in-place modification error", err)
			}
		})
	}
}

// TestFusedAdamWLeavesGradientUnscaled: GradScale scales the gradient as it
// is read; the caller's gradient (flat or segments) is never written except
// by ZeroGrad, and the update equals one from a pre-scaled gradient.
func TestFusedAdamWLeavesGradientUnscaled(t *testing.T) {
	const n = 50
	for _, segments := range []bool{false, true} {
		s := ct.NewScope()
		g := s.Randn(ct.Options{}, nil, n)
		orig := g.Float32s()
		p0 := s.Randn(ct.Options{}, nil, n)
		run := func(grad *ct.Tensor, scale float64) ([]float32, []float64) {
			p, m, v := p0.Clone(), s.Zeros(ct.Options{}, n), s.Zeros(ct.Options{}, n)
			sumsq := s.Zeros(ct.Of(ct.Float64), 2)
			fs := ct.FusedStep{GradScale: scale, SumSq: sumsq}
			flat := grad
			if segments {
				a, b := grad.Narrow(0, 0, 20).Contiguous(), grad.Narrow(0, 20, n-20).Contiguous()
				fs.Grads, fs.GradNumel, flat = []*ct.Tensor{a, b}, []int64{20, n - 20}, nil
				defer func() {
					if !reflect.DeepEqual(append(a.Float32s(), b.Float32s()...), grad.Float32s()) {
						t.Errorf("segments %v: the fused step wrote the gradient segments", segments)
					}
				}()
			}
			if err := ct.FusedAdamW(p, flat, m, v, 1, ct.DefaultAdamWConfig(), fs); err != nil {
				t.Fatal(err)
			}
			return p.Float32s(), sumsq.Float64s()
		}
		got, gotNorm := run(g, 0.5)
		if !reflect.DeepEqual(g.Float32s(), orig) {
			t.Errorf("segments %v: GradScale modified the caller's gradient", segments)
		}
		want, wantNorm := run(g.MulScalar(0.5), 1)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("segments %v: update with GradScale 0.5 differs from the update with a pre-scaled gradient", segments)
		}
		if math.Abs(gotNorm[0]-wantNorm[0]) > 1e-12*wantNorm[0] {
			t.Errorf("segments %v: gradient norm² %v, want %v (of the scaled gradient)", segments, gotNorm[0], wantNorm[0])
		}
		s.Close()
	}
}

// TestMultiOutputOpsAllOrNothing: a function with two tensor outputs whose
// second handle cannot be created frees the first instead of leaking it
// behind the error.
func TestMultiOutputOpsAllOrNothing(t *testing.T) {
	runtime.LockOSThread() // the fault hook is per OS thread
	defer runtime.UnlockOSThread()
	defer ct.FailNthHandleAlloc(0)
	s := ct.NewScope()
	defer s.Close()
	x := s.Randn(ct.Options{}, nil, 4, 5)
	p := s.Ones(ct.Options{}, 3).SetRequiresGrad(true)
	opt, err := ct.NewAdamW([]*ct.Tensor{p}, ct.DefaultAdamWConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Close()
	p.MulScalar(2).Sum().Backward()
	if err := opt.Step(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"max_dim", func() error { return ct.Try(func() { v, i := x.MaxDim(1, false); v.Free(); i.Free() }) }},
		{"adamw_get_state", func() error {
			st, err := opt.State(nil, 0)
			st.ExpAvg.Free()
			st.ExpAvgSq.Free()
			return err
		}},
	} {
		for nth := 1; nth <= 2; nth++ {
			before := ct.LiveTensors()
			ct.FailNthHandleAlloc(nth)
			err := tc.call()
			ct.FailNthHandleAlloc(0)
			if !errors.Is(err, ct.ErrOutOfMemory) {
				t.Errorf("%s, handle %d failing: err %v, want out of memory", tc.name, nth, err)
			}
			if leaked := ct.LiveTensors() - before; leaked != 0 {
				t.Errorf("%s, handle %d failing: %d tensor handles leaked", tc.name, nth, leaked)
			}
		}
		before := ct.LiveTensors()
		if err := tc.call(); err != nil || ct.LiveTensors() != before {
			t.Errorf("%s without a fault: err %v, %d handles left", tc.name, err, ct.LiveTensors()-before)
		}
	}
}

// TestTensorIsNotCopyable: Tensor embeds a type with Lock/Unlock methods,
// which `go vet`'s copylocks check treats as a lock, so copying a Tensor
// value (two owners of one handle, a double free) is reported.
func TestTensorIsNotCopyable(t *testing.T) {
	typ := reflect.TypeOf(ct.Tensor{})
	for i := 0; i < typ.NumField(); i++ {
		f := reflect.PointerTo(typ.Field(i).Type)
		if _, ok := f.MethodByName("Lock"); ok {
			if _, ok := f.MethodByName("Unlock"); ok {
				return
			}
		}
	}
	t.Fatal("cgotorch.Tensor has no noCopy field: go vet cannot catch a copied Tensor")
}
