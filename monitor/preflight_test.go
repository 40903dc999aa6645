package monitor

import (
	"errors"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/scdiffusion/gotorch-train/cgotorch"
)

func linearPoints(a, b int64, sizes ...int) []PreflightPoint {
	var p []PreflightPoint
	for _, mb := range sizes {
		p = append(p, PreflightPoint{Microbatch: mb, PeakAllocated: a + b*int64(mb)})
	}
	return p
}

func TestFitPreflight(t *testing.T) {
	const a, b = 100 * MiB, 10 * MiB
	cases := []struct {
		name      string
		pts       []PreflightPoint
		cfg       PreflightConfig
		pred      int64
		verdict   Verdict
		maxMB     int
		ratio     float64
		bandShare float64 // expected half-width / prediction, 0: not checked
	}{
		{"exact line, fits", linearPoints(a, b, 1, 2, 4), PreflightConfig{Microbatch: 16, BatchSize: 64, AvailableBytes: 320 * MiB},
			260 * MiB, VerdictFits, 16, 1, 0.05},
		{"tight", linearPoints(a, b, 1, 2, 4), PreflightConfig{Microbatch: 16, BatchSize: 64, AvailableBytes: 265 * MiB},
			260 * MiB, VerdictTight, 8, 1, 0.05},
		{"does not fit, smaller microbatch does", linearPoints(a, b, 1, 2, 4), PreflightConfig{Microbatch: 16, BatchSize: 64, AvailableBytes: 250 * MiB},
			260 * MiB, VerdictNoFit, 8, 1, 0.05},
		{"nothing fits", linearPoints(a, b, 1, 2), PreflightConfig{Microbatch: 16, BatchSize: 64, AvailableBytes: 90 * MiB},
			260 * MiB, VerdictNoFit, 0, 1, 0.05},
		{"unknown available", linearPoints(a, b, 2, 4), PreflightConfig{Microbatch: 8}, 180 * MiB, VerdictUnknown, 0, 1, 0.05},
		{"static, overhead, measured ratio", []PreflightPoint{{1, a + b, 2 * (a + b)}, {2, a + 2*b, 0}, {4, a + 4*b, 0}},
			PreflightConfig{Microbatch: 16, BatchSize: 64, StaticBytes: 40 * MiB, OverheadBytes: 500 * MiB, AvailableBytes: 2 * GiB},
			(260*MiB+40*MiB)*2 + 500*MiB, VerdictFits, 32, 2, 0},
		{"given ratio wins", linearPoints(a, b, 1, 2, 4), PreflightConfig{Microbatch: 16, ReservedRatio: 1.25, AvailableBytes: 1 * GiB},
			325 * MiB, VerdictFits, 32, 1.25, 0.05},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := FitPreflight(c.pts, c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(r.A-a) > 1 || math.Abs(r.B-b) > 1 {
				t.Fatalf("fit a=%g b=%g", r.A, r.B)
			}
			if r.Predicted != c.pred || r.Verdict != c.verdict || r.MaxMicrobatch != c.maxMB || r.ReservedRatio != c.ratio {
				t.Fatalf("pred %d (want %d) verdict %q max %d ratio %g\n%s", r.Predicted/MiB, c.pred/MiB, r.Verdict, r.MaxMicrobatch, r.ReservedRatio, r.Line())
			}
			if c.bandShare > 0 {
				if got := float64(r.High-r.Predicted) / float64(r.Predicted); math.Abs(got-c.bandShare) > 1e-3 {
					t.Fatalf("band %.4f", got)
				}
			}
			if c.cfg.AvailableBytes > 0 && r.MarginBytes != c.cfg.AvailableBytes-r.Predicted {
				t.Fatalf("margin %d", r.MarginBytes)
			}
			t.Log(r.Line())
		})
	}
}

func TestFitPreflightNoisyBand(t *testing.T) {
	pts := []PreflightPoint{{1, 110 * MiB, 0}, {2, 118 * MiB, 0}, {4, 142 * MiB, 0}}
	r, err := FitPreflight(pts, PreflightConfig{Microbatch: 32, AvailableBytes: GiB})
	if err != nil {
		t.Fatal(err)
	}
	if r.ResidualStd <= 0 || r.High-r.Predicted <= r.Predicted/20 || math.Abs(float64((r.Predicted-r.Low)-(r.High-r.Predicted))) > 1 {
		t.Fatalf("residual %g band %d..%d..%d", r.ResidualStd, r.Low, r.Predicted, r.High)
	}
}

func TestFitPreflightErrors(t *testing.T) {
	if _, err := FitPreflight(linearPoints(1, 1, 2, 2), PreflightConfig{Microbatch: 4}); !errors.Is(err, ErrPreflight) {
		t.Errorf("one size: %v", err)
	}
	if _, err := FitPreflight(linearPoints(1, 1, 1, 2), PreflightConfig{}); !errors.Is(err, ErrPreflight) {
		t.Errorf("no microbatch: %v", err)
	}
	boom := errors.New("boom")
	_, err := RunProbes(func(mb int) (int64, error) {
		if mb == 4 {
			return 0, boom
		}
		return int64(mb), nil
	}, nil, nil, nil)
	if !errors.Is(err, ErrPreflight) || !errors.Is(err, boom) {
		t.Errorf("probe error: %v", err)
	}
}

func TestAvailableBytes(t *testing.T) {
	gpu := withNVML(cudaSample(3*GiB, 4*GiB, -1, 0), 16*GiB, 10*GiB, 5*GiB, GPUProcess{PID: 9, UsedBytes: GiB, UsedKnown: true})
	noSelf := gpu
	noSelf.ProcessGPUValid = false
	noNVML := cudaSample(3*GiB, 4*GiB, -1, 0)
	cpu := Sample{SysValid: true, SysTotalBytes: 16 * GiB, SysAvailableBytes: 8 * GiB, CPUAllocValid: true, CPUTensorBytes: GiB,
		RSSValid: true, RSSBytes: 2 * GiB}
	cg := cpu
	cg.CgroupLimited, cg.CgroupLimitBytes = true, 4*GiB
	lim := cg
	lim.CPUAllocLimitBytes = 512 * MiB
	cases := []struct {
		name string
		s    Sample
		want int64
	}{
		{"CUDA + NVML: free + own process", gpu, 15 * GiB},
		{"CUDA + NVML, self not listed: free + reserved", noSelf, 14 * GiB},
		{"CUDA without NVML: unknown", noNVML, 0},
		{"CPU: host available + tensors", cpu, 9 * GiB},
		{"CPU: cgroup limit less non-tensor RSS", cg, 3 * GiB},
		{"CPU: cgotorch allocation limit", lim, 512 * MiB},
		{"nothing known", Sample{}, 0},
	}
	for _, c := range cases {
		if got := AvailableBytes(&c.s, 0); got != c.want {
			t.Errorf("%s: %d MiB, want %d MiB", c.name, got/MiB, c.want/MiB)
		}
	}
	if got := AvailableBytes(&gpu, 16*GiB); got != 0 {
		t.Errorf("margin beyond available: %d", got)
	}
}

// TestChooseMicrobatchCoTenant drives the X2 choice through the sampler
// with a fake NVML: a co-tenant appears and takes memory, then leaves.
func TestChooseMicrobatchCoTenant(t *testing.T) {
	pid := os.Getpid()
	pf, err := FitPreflight(linearPoints(2*GiB, 256*MiB, 1, 2, 4), PreflightConfig{Microbatch: 16, BatchSize: 64,
		ReservedRatio: 1.1, OverheadBytes: 600 * MiB})
	if err != nil {
		t.Fatal(err)
	}
	fake := &fakeNVML{bus: "0000:01:00.0"}
	sp := sampler{nvml: fake, busID: "0000:01:00.0", pid: pid}
	cases := []struct {
		name   string
		free   int64
		self   int64
		others []GPUProcess
		want   int
	}{
		{"alone on a 16 GiB card", 15*GiB - 3*GiB, 3 * GiB, nil, 32},
		{"co-tenant holds 6 GiB", 15*GiB - 9*GiB, 3 * GiB, []GPUProcess{{PID: 4242, UsedBytes: 6 * GiB, UsedKnown: true}}, 16},
		{"co-tenant holds 11 GiB", 15*GiB - 14*GiB, 3 * GiB, []GPUProcess{{PID: 4242, UsedBytes: 11 * GiB, UsedKnown: true}}, 2},
		{"co-tenant holds 12.5 GiB", GiB / 2, 3 * GiB, []GPUProcess{{PID: 4242, UsedBytes: 12*GiB + GiB/2, UsedKnown: true}}, 0},
		{"co-tenant left", 12 * GiB, 3 * GiB, nil, 32},
		{"8 GiB card", 7*GiB - 3*GiB, 3 * GiB, nil, 8},
	}
	for _, c := range cases {
		fake.mem = DeviceMemory{TotalBytes: 16 * GiB, FreeBytes: c.free, Version: 2}
		fake.procs = append([]GPUProcess{{PID: pid, UsedBytes: c.self, UsedKnown: true}}, c.others...)
		var s Sample
		sp.sampleNVML(&s)
		s.CUDAValid, s.CUDA.ReservedBytes = true, 2*GiB // as the CUDA flavour would report
		if got := ChooseMicrobatch(&pf, &s, 0); got != c.want {
			t.Errorf("%s: microbatch %d, want %d (available %s)", c.name, got, c.want, fmtSize(AvailableBytes(&s, 0)))
		}
	}
}

// mlpStep is a real training step on the CPU: a 256→512→256 MLP, MSE-like
// loss, backward and AdamW. Its peak allocated bytes grow linearly with
// the microbatch.
type mlpStep struct {
	w1, w2 *cgotorch.Tensor
	opt    *cgotorch.AdamW
}

func newMLPStep(t *testing.T) *mlpStep {
	m := &mlpStep{
		w1: cgotorch.Full(0.01, cgotorch.Options{}, 256, 512).SetRequiresGrad(true),
		w2: cgotorch.Full(0.01, cgotorch.Options{}, 512, 256).SetRequiresGrad(true),
	}
	var err error
	if m.opt, err = cgotorch.NewAdamW([]*cgotorch.Tensor{m.w1, m.w2}, cgotorch.DefaultAdamWConfig()); err != nil {
		t.Fatal(err)
	}
	if err := m.step(1); err != nil { // creates AdamW's state
		t.Fatal(err)
	}
	return m
}

func (m *mlpStep) step(mb int) error {
	s := cgotorch.NewScope()
	return s.Run(func() error {
		x := s.Full(1, cgotorch.Options{}, int64(mb), 256)
		loss := x.MatMul(m.w1).ReLU().MatMul(m.w2).Square().Mean()
		loss.Backward()
		if err := m.opt.Step(); err != nil {
			return err
		}
		return m.opt.ZeroGrad(false)
	})
}

func (m *mlpStep) close() {
	m.opt.Close()
	m.w1.Free()
	m.w2.Free()
}

// TestPreflightRealCPU runs the pre-flight probe on real training steps
// with cgotorch's CPU allocation limit as the memory budget: a microbatch
// predicted to fit trains under the limit, one predicted not to fit runs
// out of memory.
func TestPreflightRealCPU(t *testing.T) {
	if cgotorch.CUDAIsAvailable() {
		t.Skip("CPU-flavour test")
	}
	base := cgotorch.LiveTensors()
	mlp := newMLPStep(t)
	defer func() {
		mlp.close()
		if got := cgotorch.LiveTensors(); got != base {
			t.Errorf("live tensors %d, want %d", got, base)
		}
	}()
	m, buf := newTestMonitor(t, Options{})
	probe := func(mb int) (int64, error) { return 0, mlp.step(mb) } // the monitor reads the allocator's peak

	// First fit without a budget to size the limit between microbatch 512 and 1024.
	cfg := PreflightConfig{ProbeSizes: []int{64, 128, 256}, Microbatch: 512, BatchSize: 1024}
	free, err := m.Preflight(probe, cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, _, hi512 := free.Predict(512)
	_, lo1024, _ := free.Predict(1024)
	if hi512 >= lo1024 || free.B <= 0 {
		t.Fatalf("bands overlap: %s", free.Line())
	}
	withCPULimit(t, 0)
	cgotorch.SetCPUAllocLimit((hi512 + lo1024) / 2)

	for _, c := range []struct {
		mb      int
		verdict Verdict
		oom     bool
	}{{512, VerdictFits, false}, {1024, VerdictNoFit, true}} {
		cfg.Microbatch = c.mb
		r, err := m.Preflight(probe, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if r.Verdict != c.verdict || r.AvailableBytes != (hi512+lo1024)/2 || r.MaxMicrobatch != 512 {
			t.Fatalf("microbatch %d: %s", c.mb, r.Line())
		}
		err = mlp.step(c.mb)
		if got := errors.Is(err, cgotorch.ErrOutOfMemory); got != c.oom {
			t.Fatalf("microbatch %d (%s): step error %v", c.mb, r.Verdict, err)
		}
	}
	if !strings.Contains(buf.String(), "Pre-flight: microbatch 1024 → predicted peak ") {
		t.Errorf("no pre-flight line:\n%s", buf.String())
	}
	t.Log(buf.String())
}
