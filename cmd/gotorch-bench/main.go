// Command gotorch-bench measures gotorch-train's hot paths for the
// side-by-side comparisons with PyTorch that scripts/bench.sh runs:
//
//	gotorch-bench ops                      per-op overhead (1-element tensors)
//	gotorch-bench mlp   [-steps N]         128→512→512→128 MLP training, batch 64
//	gotorch-bench step  [-steps N] [-batch B]  the Cell_Unet training step
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
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

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
		return fmt.Errorf("usage: gotorch-bench ops|mlp|step|sample|sample-gemm|blas-advice [flags]")
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
		out, err = benchStep(*warmup, *steps, *batch, dev)
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

// benchStep: the Cell_Unet training step of the trainer (uniform sampler,
// fused AdamW + EMA 0.9999, float32 noise, logging every 100 steps) on
// 4,096 unit-norm random latents, batch B.
func benchStep(warmup, steps, batch int, dev ct.Device) (map[string]any, error) {
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
	cfg.LRAnnealSteps = warmup + steps
	cfg.SaveInterval = 1 << 30
	cfg.SaveDir = dir
	var t0 time.Time
	var el float64
	var rss int64
	var loss float64
	cfg.Hooks.AfterStep = func(step int, info trainer.StepInfo) {
		switch step {
		case warmup - 1:
			t0 = time.Now()
		case warmup + steps - 1:
			el = time.Since(t0).Seconds()
			rss = peakRSS() // before the final checkpoint is written
			loss = info.Loss.Item()
		}
	}
	if _, err := trainer.Train(context.Background(), cfg, data); err != nil {
		return nil, err
	}
	out := map[string]any{"bench": "step", "batch": batch, "device": dev.String(), "steps_per_s": float64(steps) / el,
		"ms_per_step": 1e3 * el / float64(steps), "last_loss": loss, "train_peak_rss_mib": float64(rss) / (1 << 20)}
	if dev.IsCUDA() {
		if st, err := ct.CUDAMemoryStats(dev.Index, false); err == nil {
			out["cuda_peak_allocated_mib"] = float64(st.PeakAllocatedBytes) / (1 << 20)
			out["cuda_peak_reserved_mib"] = float64(st.PeakReservedBytes) / (1 << 20)
		}
	}
	return out, nil
}
