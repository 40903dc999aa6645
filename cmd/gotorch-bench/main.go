// Command gotorch-bench measures gotorch-train's hot paths for the
// side-by-side comparisons with PyTorch that scripts/bench.sh runs:
//
//	gotorch-bench ops                      per-op overhead (1-element tensors)
//	gotorch-bench mlp   [-steps N]         128→512→512→128 MLP training, batch 64
//	gotorch-bench step  [-steps N] [-batch B] [-impl auto|fused|generic]
//	                                       the Cell_Unet training step
//	gotorch-bench gemm  [-steps N] [-batch B]  the matrix products of the fused
//	                                       step alone: the step's floor
//	gotorch-bench ae    [-steps N] [-genes G] [-impl auto|fused|generic]
//	                                       the autoencoder training step
//	gotorch-bench ae-gemm [-steps N] [-genes G]  its matrix products alone
//	gotorch-bench sample [-steps N] [-batch B] [-precision fp32|bf16] [-model FILE]
//	                                       the ancestral sampling loop
//	gotorch-bench sample-gemm [-forward shared|full] ...
//	                                       its matrix products only
//
// Each prints one JSON object on stdout. Thread counts come from
// -threads (libtorch and OpenBLAS); run with OMP_WAIT_POLICY=PASSIVE.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/scdiffusion/gotorch-train/cellunet"
	"github.com/scdiffusion/gotorch-train/cellunet/autoencoder"
	"github.com/scdiffusion/gotorch-train/cellunet/diffusion"
	"github.com/scdiffusion/gotorch-train/cellunet/trainer"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cmd/internal/blasexec"
	"github.com/scdiffusion/gotorch-train/nn"
)

func main() {
	if os.Getenv("BENCH_MODE") != "matched" {
		blasexec.Reexec(os.Stderr) // what gotorch-train does by default
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gotorch-bench:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: gotorch-bench ops|mlp|mlp-fused|step|gemm|ae|ae-gemm|sample|sample-gemm|blas-advice [flags]")
	}
	if args[0] == "blas-advice" {
		// The OpenBLAS kernel family this CPU supports, when OpenBLAS chose a
		// weaker one (else empty): for setting OPENBLAS_CORETYPE in scripts.
		info, _ := os.ReadFile("/proc/cpuinfo")
		current, suggested := ct.OpenBLASAdvice(string(info))
		if suggested == "" {
			suggested = current
		}
		fmt.Println(suggested)
		return nil
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	threads := fs.Int("threads", 1, "intra-op threads")
	steps := fs.Int("steps", 200, "measured steps")
	warmup := fs.Int("warmup", 10, "warm-up steps")
	batch := fs.Int("batch", 128, "batch size (step)")
	device := fs.String("device", "cpu", "device (step): cpu or cuda[:N]")
	impl := fs.String("impl", "auto", "training step (step): auto, fused or generic")
	genes := fs.Int("genes", 2000, "genes (ae)")
	precision := fs.String("precision", "fp32", "sample: fp32 or bf16")
	modelPath := fs.String("model", "", "sample: backbone checkpoint (default: Cell_Unet after ManualSeed(0))")
	forward := fs.String("forward", "shared", "sample-gemm: shared (the loop's ForwardAt) or full (every Linear at batch B)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if _, err := ct.Init(ct.Config{Threads: *threads}); err != nil {
		return err
	}
	var out map[string]any
	var err error
	switch args[0] {
	case "ops":
		out, err = benchOps()
	case "mlp":
		out, err = benchMLP(*warmup, *steps, false)
	case "mlp-fused":
		out, err = benchMLP(*warmup, *steps, true)
	case "step":
		dev, derr := ct.ParseDevice(*device)
		if derr != nil {
			return derr
		}
		step, perr := trainer.ParseStepImpl(*impl)
		if perr != nil {
			return perr
		}
		out, err = benchStep(*warmup, *steps, *batch, dev, step)
	case "gemm":
		out, err = benchGEMM(*warmup, *steps, *batch)
	case "ae":
		if *impl != "auto" && *impl != "fused" && *impl != "generic" {
			return fmt.Errorf("-impl: want auto, fused or generic, got %q", *impl)
		}
		out, err = benchAE(*warmup, *steps, *batch, *genes, *impl)
	case "ae-gemm":
		out, err = benchAEGEMM(*warmup, *steps, *batch, *genes)
	case "sample":
		out, err = benchSample(*warmup, *steps, *batch, *precision, *modelPath)
	case "sample-gemm":
		out, err = benchSampleGEMM(*warmup, *steps, *batch, *precision, *forward)
	default:
		return fmt.Errorf("unknown benchmark %q", args[0])
	}
	if err != nil {
		return err
	}
	out["impl"] = "go"
	out["mode"] = os.Getenv("BENCH_MODE")
	out["openblas_core"] = ct.OpenBLASCore()
	out["torch"] = ct.Build().TorchVersion
	out["threads"] = *threads
	out["peak_rss_mib"] = float64(peakRSS()) / (1 << 20)
	return json.NewEncoder(os.Stdout).Encode(out)
}

// cpuSeconds is the process's user + system CPU time (all threads): a
// measure that other load on the machine disturbs less than wall time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// peakRSS is VmHWM from /proc/self/status in bytes.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return -1
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// benchOps: median time of a.add_(b) on 1-element tensors, and of r = a+b
// followed by freeing r, over repeated batches of calls.
func benchOps() (map[string]any, error) {
	a, b := ct.Full(1, ct.Options{}, 1), ct.Full(2, ct.Options{}, 1)
	defer a.Free()
	defer b.Free()
	const n = 20000
	var inplace, alloc []float64
	for rep := 0; rep < 15; rep++ {
		t0 := time.Now()
		for i := 0; i < n; i++ {
			a.Add_(b)
		}
		inplace = append(inplace, float64(time.Since(t0).Nanoseconds())/n)
		t0 = time.Now()
		for i := 0; i < n; i++ {
			a.Add(b).Free()
		}
		alloc = append(alloc, float64(time.Since(t0).Nanoseconds())/n)
	}
	return map[string]any{"bench": "ops", "add_inplace_us": median(inplace) / 1e3, "add_free_us": median(alloc) / 1e3}, nil
}

// benchMLP: the MLP of binding.md §9 (128→512→512→128, ReLU, batch 64,
// MSE, AdamW lr 1e-3 wd 1e-2, one fixed batch, seed 0). With fused, the
// parameters are one flat buffer updated by cgotorch.FusedAdamW (gotorch-
// train's optimizer path); otherwise torch::optim::AdamW, as in Python.
func benchMLP(warmup, steps int, fused bool) (map[string]any, error) {
	if err := ct.ManualSeed(0); err != nil {
		return nil, err
	}
	st := nn.NewStore(ct.CPU)
	defer st.Close()
	p := st.Root()
	mlp := nn.NewSequential(
		nn.NewLinear(p.At(0), 128, 512, nn.DefaultLinearConfig()), nn.ReLU{},
		nn.NewLinear(p.At(2), 512, 512, nn.DefaultLinearConfig()), nn.ReLU{},
		nn.NewLinear(p.At(4), 512, 128, nn.DefaultLinearConfig()))
	data := ct.NewScope()
	defer data.Close()
	x := data.Randn(ct.Options{}, nil, 64, 128)
	y := data.Randn(ct.Options{}, nil, 64, 128)
	acfg := ct.AdamWConfig{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 1e-2}
	s := ct.NewScope()
	var first, last float64
	var step func() error
	if fused {
		if err := st.FlattenParams(); err != nil {
			return nil, err
		}
		m, v := data.Zeros(ct.Options{}, st.NumParams()), data.Zeros(ct.Options{}, st.NumParams())
		var k int64
		step = func() error {
			defer s.Close()
			return ct.Try(func() {
				loss := mlp.Forward(x.Alias(s)).MSELoss(y, ct.ReduceMean)
				loss.Backward()
				grads, numel := st.Grads(s)
				k++
				if err := ct.FusedAdamW(st.FlatParams(), nil, m, v, k, acfg, ct.FusedStep{Grads: grads, GradNumel: numel}); err != nil {
					panic(err)
				}
				st.ClearGrads()
				last = loss.Item()
			})
		}
	} else {
		opt, err := ct.NewAdamW(st.Tensors(), acfg)
		if err != nil {
			return nil, err
		}
		defer opt.Close()
		step = func() error {
			defer s.Close()
			return ct.Try(func() {
				if err := opt.ZeroGrad(true); err != nil {
					panic(err)
				}
				loss := mlp.Forward(x.Alias(s)).MSELoss(y, ct.ReduceMean)
				loss.Backward()
				if err := opt.Step(); err != nil {
					panic(err)
				}
				last = loss.Item()
			})
		}
	}
	for i := 0; i < warmup; i++ {
		if err := step(); err != nil {
			return nil, err
		}
		if i == 0 {
			first = last
		}
	}
	runtime.GC()
	t0 := time.Now()
	for i := 0; i < steps; i++ {
		if err := step(); err != nil {
			return nil, err
		}
	}
	el := time.Since(t0).Seconds()
	name := "mlp"
	if fused {
		name = "mlp-fused"
	}
	return map[string]any{"bench": name, "steps_per_s": float64(steps) / el, "first_loss": first, "last_loss": last}, nil
}

// opCountSteps are the steps after the timed ones whose libtorch ops are
// counted (the observer costs time, so it is not installed while timing).
const opCountSteps = 3

// benchStep: the Cell_Unet training step of the trainer (uniform sampler,
// fused AdamW + EMA 0.9999, float32 noise, logging every 100 steps) on
// 4,096 unit-norm random latents, batch B, with the given implementation.
// Besides time it reports the CPU allocator's allocations and transient
// tensor bytes per timed step and the dispatcher ops of a step.
func benchStep(warmup, steps, batch int, dev ct.Device, impl trainer.StepImpl) (map[string]any, error) {
	dir, err := os.MkdirTemp("", "gotorch-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	data := func() *ct.Tensor {
		s := ct.NewScope()
		defer s.Close()
		g, _ := ct.NewGenerator(ct.CPU, 99)
		defer g.Close()
		return s.Keep(s.Randn(ct.Options{}, g, 4096, 128).Normalize(2, 1, 1e-12).To(dev, 0))
	}()
	defer data.Free()
	if dev.IsCUDA() {
		if err := ct.CUDAResetPeakStats(dev.Index); err != nil {
			return nil, err
		}
	}
	cfg := trainer.DefaultConfig()
	cfg.Device = dev
	cfg.BatchSize = batch
	cfg.Step = impl
	cfg.LRAnnealSteps = warmup + steps + opCountSteps
	cfg.SaveInterval = 1 << 30
	cfg.SaveDir = dir
	var announce strings.Builder
	cfg.Out = &announce
	var t0 time.Time
	var el, cpu0, cpu float64
	var rss int64
	var loss float64
	var a0, a1 ct.CPUAllocStats
	var ops ct.OpCounts
	var opsErr error
	cfg.Hooks.AfterStep = func(step int, info trainer.StepInfo) {
		switch step {
		case warmup - 1:
			a0 = ct.CPUAllocatorStats()
			ct.ResetCPUPeak()
			cpu0 = cpuSeconds()
			t0 = time.Now()
		case warmup + steps - 1:
			el = time.Since(t0).Seconds()
			cpu = cpuSeconds() - cpu0
			a1 = ct.CPUAllocatorStats()
			rss = peakRSS() // before the final checkpoint is written
			loss = info.Loss.Item()
			opsErr = ct.StartOpCounter()
		case warmup + steps + opCountSteps - 1:
			if opsErr == nil {
				ops, opsErr = ct.StopOpCounter()
			}
		}
	}
	if _, err := trainer.Train(context.Background(), cfg, data); err != nil {
		return nil, err
	}
	used := "generic"
	if strings.Contains(announce.String(), "training step: fused") {
		used = "fused"
	}
	name := "step"
	if used == "generic" && impl == trainer.StepGeneric {
		name = "step-generic"
	}
	out := map[string]any{"bench": name, "impl_step": used, "batch": batch, "device": dev.String(), "steps_per_s": float64(steps) / el,
		"ms_per_step": 1e3 * el / float64(steps), "cpu_ms_per_step": 1e3 * cpu / float64(steps), "last_loss": loss,
		"train_peak_rss_mib": float64(rss) / (1 << 20),
		"allocs_per_step":    float64(a1.NumAllocs-a0.NumAllocs) / float64(steps),
		"transient_mib":      float64(a1.PeakAllocatedBytes-a0.AllocatedBytes) / (1 << 20)}
	if opsErr == nil {
		// The hooks run after each step's update, so the counted window is
		// exactly opCountSteps whole steps (the AfterStep hook's own loss
		// ops included: 3 per step).
		out["ops_per_step"] = float64(ops.Ops) / opCountSteps
		out["kernels_per_step"] = float64(ops.Kernels) / opCountSteps
	}
	if dev.IsCUDA() {
		if st, err := ct.CUDAMemoryStats(dev.Index, false); err == nil {
			out["cuda_peak_allocated_mib"] = float64(st.PeakAllocatedBytes) / (1 << 20)
			out["cuda_peak_reserved_mib"] = float64(st.PeakReservedBytes) / (1 << 20)
		}
	}
	return out, nil
}

// benchGEMM: the fused step's matrix products alone (the default Cell_Unet
// at batch B, the same calls on the same buffers, replayed): the floor of
// the step on this BLAS.
func benchGEMM(warmup, steps, batch int) (map[string]any, error) {
	if err := ct.ManualSeed(0); err != nil {
		return nil, err
	}
	st := nn.NewStore(ct.CPU)
	defer st.Close()
	m, err := cellunet.New(st.Root(), cellunet.DefaultConfig())
	if err != nil {
		return nil, err
	}
	defer m.Close()
	if err := st.Flatten(); err != nil {
		return nil, err
	}
	d, err := diffusion.New(diffusion.DefaultConfig(), ct.CPU)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	sc := d.Schedule()
	step, err := m.NewFusedStep(cellunet.FusedSchedule{SqrtAlphasCumprod: sc.SqrtAlphasCumprod,
		SqrtOneMinusAlphasCumprod: sc.SqrtOneMinusAlphasCumprod, TimestepMap: sc.TimestepMap}, ct.FusedCPU)
	if err != nil {
		return nil, err
	}
	defer step.Close()
	s := ct.NewScope()
	defer s.Close()
	var info ct.FusedStepInfo
	err = s.Run(func() error {
		b := int64(batch)
		x := s.Randn(ct.Options{}, nil, b, 128).Normalize(2, 1, 1e-12)
		if err := step.Reserve(b); err != nil {
			return err
		}
		if err := step.Run(ct.UnetBatch{Data: x, T: s.RandInt(0, 1000, ct.Options{DType: ct.Int64}, nil, b),
			Noise: s.Randn(ct.Options{}, nil, b, 128), Weights: s.Ones(ct.Options{}, b), MSE: s.Empty(ct.Options{}, b), Coef: 1 / float64(b)}); err != nil {
			return err
		}
		info, err = step.Info()
		return err
	})
	if err != nil {
		return nil, err
	}
	out, err := timeReplays(warmup, steps, step.ReplayGEMMs)
	if err != nil {
		return nil, err
	}
	out["bench"], out["batch"], out["gemms"], out["blas"] = "gemm", batch, info.GEMMsLastRun, info.BLAS
	return out, nil
}

// timeReplays times replay(steps) after replay(warmup): wall and CPU
// milliseconds per replayed step.
func timeReplays(warmup, steps int, replay func(int) error) (map[string]any, error) {
	if err := replay(warmup); err != nil {
		return nil, err
	}
	cpu0, t0 := cpuSeconds(), time.Now()
	if err := replay(steps); err != nil {
		return nil, err
	}
	el, cpu := time.Since(t0).Seconds(), cpuSeconds()-cpu0
	return map[string]any{"ms_per_step": 1e3 * el / float64(steps), "cpu_ms_per_step": 1e3 * cpu / float64(steps)}, nil
}

// benchAE: the autoencoder's training step (VAE_train.py: MSE, AdamW 5e-4
// wd 0.01, the reference architecture [1024,1024,1024] → 128) on 1,024
// random cells × genes (10 % non-zero, log1p-like values), batch B.
func benchAE(warmup, steps, batch, genes int, impl string) (map[string]any, error) {
	dir, err := os.MkdirTemp("", "gotorch-bench-ae-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	csr := randomCSR(1024, genes, 0.1, 7)
	cfg := autoencoder.DefaultTrainConfig(int64(genes))
	cfg.SaveDir = dir
	cfg.BatchSize = batch
	cfg.MaxSteps = warmup + steps
	cfg.CheckpointFreq = 1 << 30
	cfg.LogEvery = 1 << 30
	cfg.SaveState = false
	cfg.Step = impl
	var announce strings.Builder
	cfg.Out = &announce
	var t0 time.Time
	var el, cpu0, cpu float64
	var rss int64
	var a0, a1 ct.CPUAllocStats
	cfg.AfterStep = func(step int) {
		switch step {
		case warmup - 1:
			a0 = ct.CPUAllocatorStats()
			ct.ResetCPUPeak()
			cpu0, t0 = cpuSeconds(), time.Now()
		case warmup + steps - 1:
			el, cpu = time.Since(t0).Seconds(), cpuSeconds()-cpu0
			a1 = ct.CPUAllocatorStats()
			rss = peakRSS()
		}
	}
	res, err := autoencoder.Train(context.Background(), cfg, csr)
	if err != nil {
		return nil, err
	}
	var loss float64
	if n := len(res.Log); n > 0 {
		loss = res.Log[n-1].Loss
	}
	name, used := "ae", "generic"
	if strings.Contains(announce.String(), "training step: fused") {
		used = "fused"
	} else if impl == "generic" {
		name = "ae-generic"
	}
	return map[string]any{"bench": name, "impl_step": used, "batch": batch, "genes": genes, "steps_per_s": float64(steps) / el,
		"ms_per_step": 1e3 * el / float64(steps), "cpu_ms_per_step": 1e3 * cpu / float64(steps), "last_loss": loss,
		"train_peak_rss_mib": float64(rss) / (1 << 20),
		"allocs_per_step":    float64(a1.NumAllocs-a0.NumAllocs) / float64(steps),
		"transient_mib":      float64(a1.PeakAllocatedBytes-a0.AllocatedBytes) / (1 << 20)}, nil
}

// benchAEGEMM: the fused autoencoder step's matrix products alone (the
// reference architecture for G genes at batch B, replayed).
func benchAEGEMM(warmup, steps, batch, genes int) (map[string]any, error) {
	if err := ct.ManualSeed(0); err != nil {
		return nil, err
	}
	st := nn.NewStore(ct.CPU)
	defer st.Close()
	m, err := autoencoder.New(st.Root(), autoencoder.DefaultConfig(int64(genes)))
	if err != nil {
		return nil, err
	}
	if err := st.Flatten(); err != nil {
		return nil, err
	}
	step, err := m.NewFusedStep()
	if err != nil {
		return nil, err
	}
	defer step.Close()
	if err := step.Reserve(int64(batch)); err != nil {
		return nil, err
	}
	x := make([]float32, batch*genes)
	if err := randomCSR(batch, genes, 0.1, 3).Dense(seq(batch), x); err != nil {
		return nil, err
	}
	if err := step.Run(x, int64(batch), nil, nil); err != nil {
		return nil, err
	}
	info, err := step.Info()
	if err != nil {
		return nil, err
	}
	out, err := timeReplays(warmup, steps, step.ReplayGEMMs)
	if err != nil {
		return nil, err
	}
	out["bench"], out["batch"], out["genes"], out["gemms"] = "ae-gemm", batch, genes, info.GEMMsLastRun
	return out, nil
}

// seq is 0..n-1.
func seq(n int) []int64 {
	s := make([]int64, n)
	for i := range s {
		s[i] = int64(i)
	}
	return s
}

// randomCSR is an n×g matrix in which each entry is non-zero with
// probability density (geometric gaps between non-zeros), with
// log1p(5·Exp(1)) values.
func randomCSR(n, g int, density float64, seed uint64) *autoencoder.CSR {
	r := rand.New(rand.NewPCG(seed, 1))
	m := &autoencoder.CSR{NumRows: n, NumCols: g, Indptr: make([]int64, n+1)}
	gap := func() int { return int(math.Floor(math.Log(1-r.Float64()) / math.Log1p(-density))) }
	for i := 0; i < n; i++ {
		for j := gap(); j < g; j += 1 + gap() {
			m.Indices = append(m.Indices, int32(j))
			m.Data = append(m.Data, float32(math.Log1p(5*r.ExpFloat64())))
		}
		m.Indptr[i+1] = int64(len(m.Data))
	}
	return m
}
