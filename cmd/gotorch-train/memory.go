package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/scdiffusion/gotorch-train/cellunet/trainer"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/monitor"
)

// memoryFlags are the memory monitor's flags; dir describes the default
// output directory in the help ("--save_dir/--model_name").
func memoryFlags(dir string) []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "mem_log_interval", Value: monitor.DefaultLogInterval, Usage: "memory line (Step N: CPU: …) every `STEPS`; 0 disables the lines", EnvVars: env("mem_log_interval"), Category: catMemory,
			Action: intAtLeast("mem_log_interval", 0)},
		&cli.IntFlag{Name: "cleanup_interval", Value: monitor.DefaultCleanupInterval, Usage: "Go GC + CUDA emptyCache every `STEPS` (step 0 included); 0 disables", EnvVars: env("cleanup_interval"), Category: catMemory,
			Action: intAtLeast("cleanup_interval", 0)},
		&cli.StringFlag{Name: "memory_log", Usage: "JSON Lines memory series `FILE` (default: " + dir + "/memory.jsonl; a resumed run appends to it)", EnvVars: env("memory_log"), Category: catMemory},
		&cli.StringFlag{Name: "memory_plot", Usage: "memory-over-steps SVG `FILE` written at the end (default: " + dir + "/memory.svg)", EnvVars: env("memory_plot"), Category: catMemory},
		&cli.IntFlag{Name: "cpu_mem_limit", Usage: "cap host tensor memory at `MIB` (an allocation beyond it fails as a GPU allocation would: report, --oom_retry); 0: no cap", EnvVars: env("cpu_mem_limit"), Category: catMemory,
			Action: intAtLeast("cpu_mem_limit", 0)},
		&cli.BoolFlag{Name: "log_free_cache", Usage: "add GPU Free Cache (reserved − allocated) to the memory line", EnvVars: env("log_free_cache"), Category: catMemory},
	}
}

// planFlags choose and check the memory plan of a diffusion run (train).
func planFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "auto_config", Usage: "pick batch_size/microbatch/use_fp16 from the GPU's memory (8 GB: 16/4/fp16, 12 GB: 32/8, 16 GB+: 64/16); explicit flags win; a CPU run keeps its flags", EnvVars: env("auto_config"), Category: catMemory},
		&cli.BoolFlag{Name: "preflight", Usage: "before training, probe a few steps at small microbatches and predict whether the run fits (default: off; on with --auto_config on a GPU and with --microbatch auto)", EnvVars: env("preflight"), Category: catMemory},
	}
}

// memoryRun is what the memory monitor needs to know about the run.
type memoryRun struct {
	batchSize, microbatch int
	fp16, bf16            bool
	sum                   bool     // --microbatch_sum
	command               string   // for remedies: "train-ae"
	unavailable           []string // flags the command lacks that remedies could name
	out                   io.Writer
	// rank > 0: a data-parallel rank other than 0, which writes no memory
	// series or plot (rank 0 does) and numbers its out-of-memory report.
	rank int
}

// memory wires the monitor package into a command: the Step lines,
// cleanup, the OOM report, series and plot, auto-config and pre-flight,
// the end-of-run summary.
type memory struct {
	m      *monitor.Monitor
	c      *cli.Context
	dev    ct.Device
	out    io.Writer
	run    memoryRun
	plot   string
	closed bool
}

// newMemory creates the monitor without any file (nothing on disk changes
// here; start creates the files once the run is known to start) and
// applies --cpu_mem_limit.
func newMemory(c *cli.Context, dev ct.Device, run memoryRun) (*memory, error) {
	logEvery := c.Int("mem_log_interval")
	if logEvery == 0 {
		logEvery = -1 // no lines, samples still taken
	}
	if run.out == nil {
		run.out = c.App.Writer
	}
	if lim := c.Int("cpu_mem_limit"); lim > 0 {
		ct.SetCPUAllocLimit(int64(lim) << 20)
	}
	mem := &memory{c: c, dev: dev, out: run.out, run: run}
	m, err := monitor.New(monitor.Options{
		LogInterval:     logEvery,
		CleanupInterval: c.Int("cleanup_interval"),
		Out:             run.out,
		Device:          dev.Index,
		DisableCUDA:     !dev.IsCUDA(),
		LogFreeCache:    c.Bool("log_free_cache"),
		Program:         programVersion(),
		Run:             mem.runContext(),
	})
	if err != nil {
		return nil, err
	}
	mem.m = m
	return mem, nil
}

// start creates the monitor's files for a run that is about to start:
// --memory_log and --memory_plot (default: dir/memory.jsonl and
// dir/memory.svg) and dir/oom_report.json. A resumed run appends to its
// series. A data-parallel rank other than 0 writes only its own
// out-of-memory report, dir/oom_report.rankN.json.
func (mem *memory) start(dir string, resume bool) error {
	if r := mem.run.rank; r > 0 {
		return mem.m.SetFiles(monitor.Files{Report: filepath.Join(dir, fmt.Sprintf("oom_report.rank%d.json", r))})
	}
	series, plot := mem.c.String("memory_log"), mem.c.String("memory_plot")
	if series == "" {
		series = filepath.Join(dir, "memory.jsonl")
	}
	if plot == "" {
		plot = filepath.Join(dir, "memory.svg")
	}
	mem.plot = plot
	return mem.m.SetFiles(monitor.Files{Series: series, Plot: plot, Report: filepath.Join(dir, "oom_report.json"), Append: resume})
}

// afterStep samples, logs and cleans up on schedule (the fixed phase after
// the optimizer step).
func (mem *memory) afterStep(step int) { mem.m.OnStep(step) }

// hookTrainer routes the trainer's per-step and OOM-retry callbacks here.
func (mem *memory) hookTrainer(cfg *trainer.Config) {
	prev := cfg.Hooks.AfterStep
	cfg.Hooks.AfterStep = func(step int, info trainer.StepInfo) {
		if prev != nil {
			prev(step, info)
		}
		mem.m.OnStep(step)
	}
	cfg.Hooks.OnOOMRetry = func(step, from, to int, err error) {
		mem.m.ReportOOM(err)
		mem.run.microbatch = to
		mem.m.SetRunContext(mem.runContext())
		same := "same batch, same noise and timesteps"
		if mem.run.sum {
			same += "; --microbatch_sum weights kept, so the summed gradient is unchanged"
		}
		fmt.Fprintf(mem.out, "recovered: step %d is rerun with microbatch %d (%s); the run continues\n", step, to, same)
	}
}

func (mem *memory) runContext() monitor.RunContext {
	return monitor.RunContext{BatchSize: mem.run.batchSize, Microbatch: mem.run.microbatch, UseFP16: mem.run.fp16,
		UseBF16: mem.run.bf16, AllocConf: monitor.EffectiveAllocConf(), Device: mem.dev.Index,
		SumMicrobatchGrads: mem.run.sum, Command: mem.run.command, Unavailable: mem.run.unavailable}
}

// applyAutoConfig applies --auto_config's table row under the flags the
// user set explicitly.
func (mem *memory) applyAutoConfig(cfg *trainer.Config, c *cli.Context, autoMicrobatch bool) {
	if !c.Bool("auto_config") {
		return
	}
	total, ok := mem.m.DeviceTotalBytes()
	if !ok {
		fmt.Fprintln(mem.out, "auto_config: no GPU memory figure (CPU run): keeping batch_size", cfg.BatchSize, "and microbatch", cfg.Microbatch)
		return
	}
	row := monitor.AutoConfig(total)
	var ex monitor.Explicit
	if c.IsSet("batch_size") {
		v := c.Int("batch_size")
		ex.BatchSize = &v
	}
	if c.IsSet("microbatch") && !autoMicrobatch {
		v := cfg.Microbatch
		ex.Microbatch = &v
	}
	if c.IsSet("use_fp16") || c.IsSet("precision") {
		v := cfg.Precision == trainer.FP16
		ex.UseFP16 = &v
	}
	set, notes := monitor.MergeSettings(row.Settings, ex)
	fmt.Fprintf(mem.out, "auto_config: %.1f GiB device → %d GB row: batch_size %d, microbatch %d, use_fp16 %v\n",
		float64(total)/(1<<30), row.Row, set.BatchSize, set.Microbatch, set.UseFP16)
	if row.Warning != "" {
		fmt.Fprintln(mem.out, "warning:", row.Warning)
	}
	for _, n := range notes {
		fmt.Fprintln(mem.out, "auto_config:", n)
	}
	cfg.BatchSize, cfg.Microbatch = set.BatchSize, set.Microbatch
	if set.UseFP16 {
		cfg.Precision = trainer.FP16
	} else if cfg.Precision == trainer.FP16 {
		cfg.Precision = trainer.FP32
	}
	mem.run.batchSize, mem.run.microbatch, mem.run.fp16 = cfg.BatchSize, cfg.Microbatch, cfg.Precision == trainer.FP16
	mem.m.SetRunContext(mem.runContext())
}

// preflight predicts the run's peak from a few probe steps (X1) when asked
// (--preflight, --auto_config on a GPU, or force for --microbatch auto).
// It returns nil when it did not run or failed with a warning (only
// out-of-memory errors, and any error when forced, are returned).
func (mem *memory) preflight(cfg trainer.Config, data *ct.Tensor, force bool) (*monitor.PreflightResult, error) {
	want := force || mem.c.Bool("preflight") || (mem.c.Bool("auto_config") && mem.dev.IsCUDA())
	if !want {
		return nil, nil
	}
	p, err := trainer.NewProber(cfg, data)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	mb := cfg.Microbatch
	if mb <= 0 || mb > cfg.BatchSize {
		mb = cfg.BatchSize
	}
	sizes := []int{1, 2, 4}
	if cfg.BatchSize < 4 {
		sizes = []int{1, 2}
	}
	res, err := mem.m.Preflight(p.Step, monitor.PreflightConfig{ProbeSizes: sizes, Microbatch: mb, BatchSize: cfg.BatchSize})
	if err != nil {
		if force || errors.Is(err, ct.ErrOutOfMemory) {
			return nil, err
		}
		fmt.Fprintln(mem.out, "warning: pre-flight failed:", userMessage(err))
		return nil, nil
	}
	rc := mem.runContext()
	rc.Preflight = &res
	mem.m.SetRunContext(rc)
	return &res, nil
}

// chooseMicrobatch is --microbatch auto (memory.md X2, at the start of the
// run): the largest divisor of the batch whose pre-flight prediction stays
// within 90 % of the memory available now. The batch, and with the batch
// mean the mathematics, is unchanged.
func (mem *memory) chooseMicrobatch(cfg *trainer.Config, data *ct.Tensor) error {
	res, err := mem.preflight(*cfg, data, true)
	if err != nil {
		return fmt.Errorf("--microbatch auto: the pre-flight probe failed: %w", err)
	}
	current := cfg.BatchSize
	if res.Verdict == monitor.VerdictUnknown {
		fmt.Fprintf(mem.out, "microbatch auto: the available memory is unknown; using the whole batch (%d)\n", current)
		cfg.Microbatch = current
	} else {
		mb := mem.m.ChooseMicrobatch(res, current, 0)
		if mb == 0 {
			return memoryError{fmt.Errorf("--microbatch auto: no microbatch is predicted to fit, not even 1 (%s); lower --batch_size or free memory", res.Line())}
		}
		fmt.Fprintf(mem.out, "microbatch auto: microbatch %d (batch_size %d in %d chunks)\n", mb, cfg.BatchSize, (cfg.BatchSize+mb-1)/mb)
		cfg.Microbatch = mb
	}
	mem.run.microbatch = cfg.Microbatch
	rc := mem.runContext()
	rc.Preflight = res
	mem.m.SetRunContext(rc)
	return nil
}

// guard runs fn and turns an out-of-memory error into the report.
func (mem *memory) guard(fn func() error) error { return mem.m.Guard(fn) }

// close prints the end-of-run memory summary (when the run took samples),
// writes the plot and closes the series.
func (mem *memory) close() {
	if mem.closed {
		return
	}
	mem.closed = true
	sum := mem.m.Summary()
	if sum.Samples > 0 || sum.OOMs > 0 {
		for _, l := range sum.Lines() {
			fmt.Fprintln(mem.out, l)
		}
	}
	if mem.c.Int("cpu_mem_limit") > 0 {
		ct.SetCPUAllocLimit(0) // the limit belongs to this run
	}
	if err := mem.m.Close(); err != nil {
		fmt.Fprintln(mem.out, "warning: writing the memory plot:", userMessage(err))
	} else if mem.plot != "" && sum.Samples > 0 {
		fmt.Fprintf(mem.out, "memory plot: %s\n", mem.plot)
	}
}

// nvmlInfo describes NVML for the info command.
func nvmlInfo() string {
	lib, err := monitor.OpenNVML()
	if err != nil || !lib.Available() {
		if err == nil {
			err = fmt.Errorf("nvmlInit returned %v", lib.InitResult())
			lib.Close()
		}
		return fmt.Sprintf("NVML: unavailable (%v)", err)
	}
	defer lib.Close()
	drv, err := lib.DriverVersion()
	if err != nil {
		return fmt.Sprintf("NVML: available (driver version: %v)", err)
	}
	s := "NVML: available, driver " + drv
	for i := 0; i < ct.CUDADeviceCount(); i++ {
		bus, err := ct.CUDAPCIBusID(i)
		if err != nil {
			continue
		}
		if dm, err := lib.DeviceMemory(bus); err == nil {
			s += fmt.Sprintf("\n  cuda:%d (%s): %+v", i, bus, dm)
		}
	}
	return s
}
