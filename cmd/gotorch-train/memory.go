package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/scdiffusion/gotorch-train/cellunet/trainer"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/monitor"
)

func memoryFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "mem_log_interval", Value: monitor.DefaultLogInterval, Usage: "memory line (Step N: CPU: …) every `STEPS`; 0 disables the lines", EnvVars: env("mem_log_interval"), Category: catMemory},
		&cli.IntFlag{Name: "cleanup_interval", Value: monitor.DefaultCleanupInterval, Usage: "Go GC + CUDA emptyCache every `STEPS` (step 0 included); 0 disables", EnvVars: env("cleanup_interval"), Category: catMemory},
		&cli.StringFlag{Name: "memory_log", Usage: "JSON Lines memory series `FILE` (default: save_dir/memory.jsonl)", EnvVars: env("memory_log"), Category: catMemory},
		&cli.StringFlag{Name: "memory_plot", Usage: "memory-over-steps SVG `FILE` written at the end (default: save_dir/memory.svg)", EnvVars: env("memory_plot"), Category: catMemory},
		&cli.BoolFlag{Name: "auto_config", Usage: "pick batch_size/microbatch/use_fp16 from the GPU's memory (8 GB: 16/4/fp16, 12 GB: 32/8, 16 GB+: 64/16); explicit flags win", EnvVars: env("auto_config"), Category: catMemory},
		&cli.BoolFlag{Name: "preflight", Usage: "before training, probe a few steps at small microbatches and predict whether the run fits (on by default with --auto_config)", EnvVars: env("preflight"), Category: catMemory},
		&cli.IntFlag{Name: "cpu_mem_limit", Usage: "cap host tensor memory at `MIB` (an allocation beyond it fails as a GPU allocation would: report, --oom_retry); 0: no cap", EnvVars: env("cpu_mem_limit"), Category: catMemory},
		&cli.BoolFlag{Name: "log_free_cache", Usage: "add GPU Free Cache (reserved − allocated) to the memory line", EnvVars: env("log_free_cache"), Category: catMemory},
	}
}

// memoryRun is what the memory monitor needs to know about the run.
type memoryRun struct {
	batchSize, microbatch int
	fp16, bf16            bool
	saveDir               string
	out                   io.Writer // nil: the command's output
	// rank > 0: a data-parallel rank other than 0, which writes no memory
	// series or plot (rank 0 does) and numbers its out-of-memory report.
	rank int
}

// memory wires the monitor package into a command: the Step lines,
// cleanup, the OOM report, series and plot, auto-config and pre-flight.
type memory struct {
	m       *monitor.Monitor
	c       *cli.Context
	dev     ct.Device
	out     io.Writer
	run     memoryRun
	plot    string
	closed  bool
	preview bool
}

func newMemory(c *cli.Context, dev ct.Device, run memoryRun) (*memory, error) {
	dir := run.saveDir
	if dir == "" {
		dir = c.String("save_dir")
	}
	series, plot := c.String("memory_log"), c.String("memory_plot")
	if series == "" && dir != "" {
		series = filepath.Join(dir, "memory.jsonl")
	}
	if plot == "" && dir != "" {
		plot = filepath.Join(dir, "memory.svg")
	}
	report := filepath.Join(dir, "oom_report.json")
	if run.rank > 0 {
		series, plot = "", ""
		report = filepath.Join(dir, fmt.Sprintf("oom_report.rank%d.json", run.rank))
	}
	for _, p := range []string{series, plot} {
		if p != "" {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return nil, err
			}
		}
	}
	logEvery := c.Int("mem_log_interval")
	if logEvery == 0 {
		logEvery = -1 // no lines, samples still taken
	}
	out := run.out
	if out == nil {
		out = c.App.Writer
	}
	opts := monitor.Options{
		LogInterval:     logEvery,
		CleanupInterval: c.Int("cleanup_interval"),
		Out:             out,
		SeriesPath:      series,
		PlotPath:        plot,
		ReportPath:      report,
		Device:          dev.Index,
		DisableCUDA:     !dev.IsCUDA(),
		LogFreeCache:    c.Bool("log_free_cache"),
		Program:         "gotorch-train (" + ct.Build().String() + ")",
		Run: monitor.RunContext{BatchSize: run.batchSize, Microbatch: run.microbatch, UseFP16: run.fp16,
			UseBF16: run.bf16, AllocConf: c.String("alloc_conf"), Device: dev.Index},
	}
	if c.Int("cleanup_interval") < 0 || c.Int("mem_log_interval") < 0 {
		return nil, usagef("--cleanup_interval and --mem_log_interval must be >= 0")
	}
	if lim := c.Int("cpu_mem_limit"); lim > 0 {
		ct.SetCPUAllocLimit(int64(lim) << 20)
	} else if lim < 0 {
		return nil, usagef("--cpu_mem_limit must be >= 0")
	}
	m, err := monitor.New(opts)
	if err != nil {
		return nil, err
	}
	mem := &memory{m: m, c: c, dev: dev, out: out, run: run, plot: plot}
	if conf := c.String("alloc_conf"); conf != "" {
		major, minor, _ := monitor.ParseTorchVersion(ct.Build().TorchVersion)
		warnings, err := monitor.ValidateAllocConf(conf, major, minor)
		if err != nil {
			m.Close()
			return nil, usageError{err}
		}
		for _, w := range warnings {
			fmt.Fprintln(mem.out, "warning:", w)
		}
	}
	return mem, nil
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
		rc := mem.runContext()
		rc.Microbatch = to
		mem.m.SetRunContext(rc)
		fmt.Fprintf(mem.out, "recovered: step %d is rerun with microbatch %d (same batch, same noise and timesteps); the run continues\n", step, to)
	}
}

func (mem *memory) runContext() monitor.RunContext {
	return monitor.RunContext{BatchSize: mem.run.batchSize, Microbatch: mem.run.microbatch, UseFP16: mem.run.fp16,
		UseBF16: mem.run.bf16, AllocConf: mem.c.String("alloc_conf"), Device: mem.dev.Index}
}

// applyAutoConfig applies --auto_config's table row under the flags the
// user set explicitly.
func (mem *memory) applyAutoConfig(cfg *trainer.Config, c *cli.Context) {
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
	if c.IsSet("microbatch") {
		v := c.Int("microbatch")
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
// (--preflight, or --auto_config on a GPU).
func (mem *memory) preflight(cfg trainer.Config, data *ct.Tensor) error {
	want := mem.c.Bool("preflight") || (mem.c.Bool("auto_config") && mem.dev.IsCUDA())
	if !want {
		return nil
	}
	p, err := trainer.NewProber(cfg, data)
	if err != nil {
		return err
	}
	defer p.Close()
	mb := cfg.Microbatch
	if mb <= 0 || mb > cfg.BatchSize {
		mb = cfg.BatchSize
	}
	sizes := []int{1, 2, 4}
	if mb < 4 {
		sizes = []int{1, 2}
	}
	res, err := mem.m.Preflight(p.Step, monitor.PreflightConfig{ProbeSizes: sizes, Microbatch: mb, BatchSize: cfg.BatchSize})
	if err != nil {
		if errors.Is(err, ct.ErrOutOfMemory) {
			return err
		}
		fmt.Fprintln(mem.out, "warning: pre-flight failed:", err)
		return nil
	}
	rc := mem.runContext()
	rc.Preflight = &res
	mem.m.SetRunContext(rc)
	return nil
}

// guard runs fn and turns an out-of-memory error into the report.
func (mem *memory) guard(fn func() error) error { return mem.m.Guard(fn) }

// close writes the plot and closes the series.
func (mem *memory) close() {
	if mem.closed {
		return
	}
	mem.closed = true
	if err := mem.m.Close(); err != nil {
		fmt.Fprintln(mem.out, "warning: writing the memory plot:", err)
	} else if mem.plot != "" {
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
