package cgotorch_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// needCUDA skips a test without a CUDA device, unless CGOTORCH_REQUIRE_CUDA
// is set (the GPU check script), where a missing device is a failure.
func needCUDA(t *testing.T) {
	t.Helper()
	if ct.CUDAIsAvailable() {
		return
	}
	if os.Getenv("CGOTORCH_REQUIRE_CUDA") != "" {
		t.Fatalf("CGOTORCH_REQUIRE_CUDA is set but no CUDA device is available (%s)", ct.Build())
	}
	t.Skip("no CUDA device (set CGOTORCH_REQUIRE_CUDA=1 to make this a failure)")
}

func TestCPUFlavourAnswersNoCUDA(t *testing.T) {
	if ct.Build().CUDA {
		t.Skip("CUDA flavour")
	}
	if ct.CUDAIsAvailable() || ct.CUDADeviceCount() != 0 {
		t.Error("CPU flavour reports CUDA")
	}
	for name, err := range map[string]error{
		"empty_cache": ct.EmptyCache(),
		"init":        ct.CUDAInit(0),
		"reset_peak":  ct.CUDAResetPeakStats(0),
	} {
		if !errors.Is(err, ct.ErrNoCUDA) {
			t.Errorf("%s: err = %v, want ErrNoCUDA", name, err)
		}
	}
	if _, err := ct.CUDAMemoryStats(0, true); !errors.Is(err, ct.ErrNoCUDA) {
		t.Errorf("memory stats: err = %v, want ErrNoCUDA (never zeros)", err)
	}
}

func TestCUDABuildAndRoundTrip(t *testing.T) {
	needCUDA(t)
	b := ct.Build()
	if !b.CUDA || !strings.HasPrefix(b.TorchVersion, "2.") {
		t.Errorf("build %s: want the CUDA flavour on libtorch 2.x", b)
	}
	s := ct.NewScope()
	defer s.Close()
	x := s.FromSlice([]float32{1, 2, 3, 4}, 2, 2)
	g := x.To(ct.CUDA(0), 0)
	if g.Device() != ct.CUDA(0) {
		t.Fatalf("device %v", g.Device())
	}
	back := g.MatMul(g).Float32s()
	if back[0] != 7 || back[3] != 22 {
		t.Errorf("CUDA matmul = %v", back)
	}
	bus, err := ct.CUDAPCIBusID(0)
	if err != nil || bus == "" {
		t.Errorf("PCI bus id %q, %v", bus, err)
	}
	if free, total, err := ct.CUDAMemGetInfo(0); err != nil || free <= 0 || total < free {
		t.Errorf("mem info free %d total %d err %v", free, total, err)
	}
}

func TestCUDAAllocatorStatsAndOOM(t *testing.T) {
	needCUDA(t)
	if err := ct.CUDAInit(0); err != nil {
		t.Fatal(err)
	}
	before, err := ct.CUDAMemoryStats(0, false)
	if err != nil {
		t.Fatal(err)
	}
	x := ct.Zeros(ct.On(ct.CUDA(0)), 16<<20) // 64 MiB
	after, _ := ct.CUDAMemoryStats(0, true)
	if d := after.AllocatedBytes - before.AllocatedBytes; d != 64<<20 {
		t.Errorf("a 64 MiB tensor raised allocated by %d", d)
	}
	if after.ReservedBytes < after.AllocatedBytes || after.PeakAllocatedBytes < after.AllocatedBytes {
		t.Errorf("inconsistent stats %+v", after)
	}
	x.Free()
	freed, _ := ct.CUDAMemoryStats(0, false)
	if freed.AllocatedBytes != before.AllocatedBytes {
		t.Errorf("allocated %d after free, want %d", freed.AllocatedBytes, before.AllocatedBytes)
	}
	if err := ct.CUDAResetPeakStats(0); err != nil {
		t.Fatal(err)
	}
	if err := ct.EmptyCache(); err != nil {
		t.Fatal(err)
	}
	empty, _ := ct.CUDAMemoryStats(0, false)
	if empty.ReservedBytes > freed.ReservedBytes {
		t.Errorf("reserved grew after emptyCache: %d > %d", empty.ReservedBytes, freed.ReservedBytes)
	}
	// 2^40 floats (4 TiB) cannot be allocated: a typed OOM, and the process lives on.
	err = ct.Try(func() { (*ct.Scope)(nil).Empty(ct.On(ct.CUDA(0)), 1<<40).Free() })
	if !errors.Is(err, ct.ErrOutOfMemory) {
		t.Fatalf("4 TiB CUDA allocation: err = %v, want ErrOutOfMemory", err)
	}
	oom, _ := ct.CUDAMemoryStats(0, false)
	if oom.NumOOMs <= empty.NumOOMs {
		t.Errorf("num_ooms %d did not rise", oom.NumOOMs)
	}
	y := ct.Full(2, ct.On(ct.CUDA(0)), 8)
	defer y.Free()
	if v := y.Sum().Item(); v != 16 {
		t.Errorf("after OOM: sum = %v", v)
	}
}

// TestCUDATrainingMatchesCPU: a few AdamW steps of a small MLP give the same
// losses on CUDA and CPU (within float32 tolerance), with flat live handles.
func TestCUDATrainingMatchesCPU(t *testing.T) {
	needCUDA(t)
	losses := func(dev ct.Device) []float64 {
		s := ct.NewScope()
		defer s.Close()
		g, _ := ct.NewGenerator(ct.CPU, 3)
		defer g.Close()
		w1 := s.Randn(ct.Options{}, g, 32, 16).MulScalar(0.2).To(dev, 0).SetRequiresGrad(true)
		w2 := s.Randn(ct.Options{}, g, 8, 32).MulScalar(0.2).To(dev, 0).SetRequiresGrad(true)
		x := s.Randn(ct.Options{}, g, 64, 16).To(dev, 0)
		y := s.Randn(ct.Options{}, g, 64, 8).To(dev, 0)
		opt, err := ct.NewAdamW([]*ct.Tensor{w1, w2}, ct.DefaultAdamWConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer opt.Close()
		var out []float64
		var base int64
		for i := 0; i < 100; i++ {
			if i == 10 {
				base = ct.LiveTensors()
			}
			st := ct.NewScope()
			if err := opt.ZeroGrad(false); err != nil {
				t.Fatal(err)
			}
			loss := x.Alias(st).Linear(w1, nil).ReLU().Linear(w2, nil).MSELoss(y, ct.ReduceMean)
			loss.Backward()
			if err := opt.Step(); err != nil {
				t.Fatal(err)
			}
			out = append(out, loss.Item())
			st.Close()
			if i > 10 && ct.LiveTensors() != base {
				t.Fatalf("live tensors %d at step %d, %d at step 10", ct.LiveTensors(), i, base)
			}
		}
		return out
	}
	cpu, gpu := losses(ct.CPU), losses(ct.CUDA(0))
	for i := range cpu {
		if d := cpu[i] - gpu[i]; d > 1e-4*cpu[i] || d < -1e-4*cpu[i] {
			t.Fatalf("step %d: CPU loss %v, CUDA %v", i, cpu[i], gpu[i])
		}
	}
}
