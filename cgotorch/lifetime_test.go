package cgotorch_test

import (
	"errors"
	"runtime"
	"testing"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

func TestScopeFreesEverythingItOwns(t *testing.T) {
	base := ct.LiveTensors()
	s := ct.NewScope()
	x := s.Randn(ct.Options{}, nil, 8, 8)
	y := x.MatMul(x).Exp().Sum() // four more tensors, all joining s
	kept := s.Keep(x.Clone())
	if got := s.Len(); got != 4 {
		t.Errorf("scope owns %d tensors, want 4", got)
	}
	if ct.LiveTensors()-base != 5 {
		t.Errorf("live = base+%d, want base+5", ct.LiveTensors()-base)
	}
	v := y.Item()
	s.Close()
	if y.Valid() || x.Valid() {
		t.Error("tensors still valid after Close")
	}
	if !kept.Valid() {
		t.Error("kept tensor freed by Close")
	}
	kept.Free()
	kept.Free() // idempotent
	s.Close()   // idempotent
	if ct.LiveTensors() != base {
		t.Errorf("live = base+%d after Close, want base", ct.LiveTensors()-base)
	}
	if v <= 0 {
		t.Errorf("sum(exp) = %v, want > 0", v)
	}
}

func TestOpOnUnownedTensorsIsUnowned(t *testing.T) {
	base := ct.LiveTensors()
	a := ct.Full(2, ct.Options{}, 3)
	b := a.MulScalar(3)
	if b.Scope() != nil {
		t.Fatal("result of an op on unowned tensors joined a scope")
	}
	s := ct.NewScope()
	c := s.Adopt(b).Add(a) // joins b's new scope
	if c.Scope() != s {
		t.Fatal("result did not join its first owned input's scope")
	}
	s.Close()
	a.Free()
	if ct.LiveTensors() != base {
		t.Errorf("leaked %d tensors", ct.LiveTensors()-base)
	}
}

func TestEarlyFreeInsideScope(t *testing.T) {
	base := ct.LiveTensors()
	s := ct.NewScope()
	x := s.Ones(ct.Options{}, 4)
	y := x.MulScalar(2)
	x.Free() // released now; the scope skips it later
	if x.Valid() {
		t.Fatal("x still valid after Free")
	}
	if got := y.Sum().Item(); got != 8 {
		t.Errorf("sum = %v, want 8", got)
	}
	err := ct.Try(func() { x.Exp() })
	if !errors.Is(err, ct.ErrInvalidArgument) {
		t.Errorf("use after free: err = %v, want ErrInvalidArgument", err)
	}
	s.Close()
	if ct.LiveTensors() != base {
		t.Errorf("leaked %d tensors", ct.LiveTensors()-base)
	}
}

func TestScopeRunReturnsOpErrorsAndCloses(t *testing.T) {
	base := ct.LiveTensors()
	s := ct.NewScope()
	err := s.Run(func() error {
		a := s.Ones(ct.Options{}, 2, 3)
		b := s.Ones(ct.Options{}, 4, 5)
		a.MatMul(b) // bad shapes: panics with *Error
		return nil
	})
	var e *ct.Error
	if !errors.As(err, &e) || e.Code != ct.CodeTorch || e.Op != "matmul" {
		t.Errorf("err = %v, want a torch error from matmul", err)
	}
	if ct.LiveTensors() != base {
		t.Errorf("leaked %d tensors", ct.LiveTensors()-base)
	}
	// Panics that are not *Error propagate.
	defer func() {
		if r := recover(); r != "boom" {
			t.Errorf("recovered %v, want boom", r)
		}
	}()
	_ = s.Run(func() error { panic("boom") })
}

func TestErrorPaths(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	f32 := s.Ones(ct.Options{}, 2, 2)
	f64 := s.Ones(ct.Of(ct.Float64), 2, 2)
	cases := []struct {
		name string
		fn   func()
		want error
		op   string
	}{
		{"bad shape", func() { f32.MatMul(s.Ones(ct.Options{}, 3, 3)) }, ct.ErrTorch, "matmul"},
		{"dtype mismatch", func() { f32.MatMul(f64) }, ct.ErrTorch, "matmul"},
		{"bad view", func() { f32.View(3) }, ct.ErrTorch, "view"},
		{"nil tensor", func() { f32.Add(nil) }, ct.ErrInvalidArgument, "add"},
		{"wrong data length", func() { s.FromBytes(make([]byte, 7), ct.Options{}, 2) }, ct.ErrInvalidArgument, "from_data"},
		{"wrong host type", func() { f64.Float32s() }, ct.ErrInvalidArgument, "float32s"},
		{"item of many", func() { f32.Item() }, ct.ErrInvalidArgument, "item"},
		{"negative shape", func() { s.Zeros(ct.Options{}, -1) }, ct.ErrInvalidArgument, "full"},
		{"impossible CPU allocation", func() { s.Empty(ct.Options{}, 1<<40) }, ct.ErrOutOfMemory, "empty"},
		{"randint range", func() { s.RandInt(5, 5, ct.Options{}, nil, 3) }, ct.ErrInvalidArgument, "randint"},
		{"eval batch norm without stats", func() { f32.BatchNorm(nil, nil, nil, nil, false, 0.1, 1e-5) }, ct.ErrInvalidArgument, "batch_norm"},
	}
	if !ct.Build().CUDA {
		cases = append(cases, struct {
			name string
			fn   func()
			want error
			op   string
		}{"CUDA in the CPU flavour", func() { s.Zeros(ct.On(ct.CUDA(0)), 2) }, ct.ErrNoCUDA, "full"})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := ct.Try(tc.fn)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			var e *ct.Error
			if !errors.As(err, &e) || e.Op != tc.op || e.Msg == "" {
				t.Errorf("err = %#v, want op %q and a message", err, tc.op)
			}
		})
	}
	// The process keeps working after all of these.
	if got := f32.Add(f32).Sum().Item(); got != 8 {
		t.Errorf("after errors: sum = %v, want 8", got)
	}
}

func TestOutOfMemoryInBackwardIsAnError(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	x := s.Randn(ct.Options{}, nil, 256, 256).SetRequiresGrad(true)
	y := x.MatMul(x).Sum()
	// Leave room for nothing: the gradient buffers of backward cannot be allocated.
	st := ct.CPUAllocatorStats()
	if !st.Installed {
		t.Fatal("tracking CPU allocator not installed by Init")
	}
	ct.SetCPUAllocLimit(st.AllocatedBytes + 1024)
	err := ct.Try(func() { y.Backward() })
	ct.SetCPUAllocLimit(0)
	if !errors.Is(err, ct.ErrOutOfMemory) {
		t.Fatalf("backward under an allocation limit: err = %v, want ErrOutOfMemory", err)
	}
	if ct.CPUAllocatorStats().NumOOMs <= st.NumOOMs {
		t.Error("OOM count did not rise")
	}
	// Still usable: a fresh graph back-propagates.
	x.MatMul(x).Sum().Backward()
	if x.Grad(s) == nil {
		t.Fatal("no gradient after recovery")
	}
}

func TestCPUAllocatorCountsBytes(t *testing.T) {
	before := ct.CPUAllocatorStats()
	x := ct.Zeros(ct.Options{}, 1024, 256) // 1 MiB
	mid := ct.CPUAllocatorStats()
	x.Free()
	after := ct.CPUAllocatorStats()
	if d := mid.AllocatedBytes - before.AllocatedBytes; d != 1<<20 {
		t.Errorf("allocating 1 MiB raised allocated by %d", d)
	}
	if after.AllocatedBytes != before.AllocatedBytes {
		t.Errorf("allocated %d after free, want %d", after.AllocatedBytes, before.AllocatedBytes)
	}
	if mid.PeakAllocatedBytes < mid.AllocatedBytes {
		t.Errorf("peak %d < current %d", mid.PeakAllocatedBytes, mid.AllocatedBytes)
	}
}

func TestNoGradRestoresModeAfterPanic(t *testing.T) {
	runtime.LockOSThread() // grad mode is per OS thread; observe one thread
	defer runtime.UnlockOSThread()
	if !ct.IsGradEnabled() {
		t.Fatal("grad mode disabled at start")
	}
	func() {
		defer func() { _ = recover() }()
		ct.NoGrad(func() {
			if ct.IsGradEnabled() {
				t.Error("grad enabled inside NoGrad")
			}
			panic("boom")
		})
	}()
	if !ct.IsGradEnabled() {
		t.Fatal("grad mode not restored after a panic in NoGrad")
	}
	// Nesting restores the previous mode, not "enabled".
	ct.NoGrad(func() {
		ct.WithGradMode(true, func() {
			if !ct.IsGradEnabled() {
				t.Error("WithGradMode(true) inside NoGrad")
			}
		})
		if ct.IsGradEnabled() {
			t.Error("inner WithGradMode restored to enabled instead of the outer no-grad")
		}
	})
}

func TestNoGradOpsTrackNothing(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	x := s.Ones(ct.Options{}, 3).SetRequiresGrad(true)
	var y *ct.Tensor
	ct.NoGrad(func() { y = x.MulScalar(2) })
	if y.RequiresGrad() {
		t.Error("op under NoGrad requires grad")
	}
	if !x.MulScalar(2).RequiresGrad() {
		t.Error("op outside NoGrad does not require grad")
	}
}

// TestLeakTenThousandOps: 10,000 ops in per-iteration scopes leave the live
// handle count at its baseline, and RSS does not grow.
func TestLeakTenThousandOps(t *testing.T) {
	w := ct.Full(0.01, ct.Options{}, 64, 64)
	defer w.Free()
	run := func(n int) {
		s := ct.NewScope()
		for i := 0; i < n; i++ {
			x := s.Randn(ct.Options{}, nil, 32, 64)
			y := x.Linear(w, nil).SiLU().Add(x).Mul(x).Sum()
			_ = y.Item()
			s.Close()
		}
	}
	run(200) // warm up allocator pools and Go's heap
	runtime.GC()
	base, rss0 := ct.LiveTensors(), rssBytes(t)
	run(2000) // 6 tensor-producing ops each: 12,000 ops
	runtime.GC()
	if got := ct.LiveTensors(); got != base {
		t.Errorf("live tensors %d after 12,000 ops, baseline %d", got, base)
	}
	if grow := rssBytes(t) - rss0; grow > 8<<20 {
		t.Errorf("RSS grew by %d bytes over 12,000 ops", grow)
	}
}
