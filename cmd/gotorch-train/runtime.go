package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cmd/internal/blasexec"
)

// env names the environment variable of a flag: GOTORCH_BATCH_SIZE.
func env(name string) []string { return []string{"GOTORCH_" + strings.ToUpper(name)} }

// Flag categories shown by --help.
const (
	catData   = "Data"
	catModel  = "Model"
	catTrain  = "Training"
	catMemory = "Memory"
	catSystem = "System"
)

func runtimeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "device", Value: "cpu", Usage: "`DEVICE` to run on: cpu, cuda or cuda:N", EnvVars: env("device"), Category: catSystem},
		&cli.IntFlag{Name: "threads", Value: 0, Usage: "intra-op `THREADS` for libtorch and OpenBLAS (0: OMP_NUM_THREADS or all cores)", EnvVars: env("threads"), Category: catSystem},
		&cli.StringFlag{Name: "alloc_conf", Usage: "PYTORCH_CUDA_ALLOC_CONF `VALUE` for the CUDA caching allocator (e.g. expandable_segments:True); set before the first CUDA allocation", EnvVars: env("alloc_conf"), Category: catMemory},
	}
}

// setup initialises libtorch from the runtime flags and returns the device.
// It must run before any tensor work (thread count, allocator settings).
func setup(c *cli.Context) (ct.Device, error) {
	dev, err := ct.ParseDevice(c.String("device"))
	if err != nil {
		return dev, usageError{err}
	}
	if c.Int("threads") < 0 {
		return dev, usagef("--threads must be >= 0, got %d", c.Int("threads"))
	}
	if conf := c.String("alloc_conf"); conf != "" {
		if err := checkAllocConf(conf); err != nil {
			return dev, usageError{err}
		}
	}
	b, err := ct.Init(ct.Config{Threads: threads(c), AllocConf: c.String("alloc_conf")})
	if err != nil {
		return dev, err
	}
	fmt.Fprintln(c.App.Writer, blasexec.Header(ct.NumThreads()))
	if dev.IsCUDA() {
		if !b.CUDA {
			return dev, fmt.Errorf("--device %s: %w: this libcgotorch.so is the CPU flavour (build the CUDA one with make shim FLAVOR=cuda and select it with LD_LIBRARY_PATH)", dev, ct.ErrNoCUDA)
		}
		if n := ct.CUDADeviceCount(); dev.Index >= n {
			return dev, fmt.Errorf("--device %s: %w: %d CUDA device(s) visible", dev, ct.ErrNoCUDA, n)
		}
		if err := ct.CUDAInit(dev.Index); err != nil {
			return dev, err
		}
	}
	return dev, nil
}

// threads is --threads, or OMP_NUM_THREADS, or every core (libtorch itself
// would start with one thread when nothing is set).
func threads(c *cli.Context) int {
	if n := c.Int("threads"); n > 0 {
		return n
	}
	if n, err := strconv.Atoi(os.Getenv("OMP_NUM_THREADS")); err == nil && n > 0 {
		return n
	}
	return runtime.NumCPU()
}

// checkAllocConf rejects option combinations PyTorch documents as broken.
func checkAllocConf(conf string) error {
	if strings.Contains(conf, "expandable_segments:True") && strings.Contains(conf, "max_split_size_mb") {
		return fmt.Errorf("--alloc_conf %q: expandable_segments:True must not be combined with max_split_size_mb (asserts and unbounded reserved growth, pytorch/pytorch#123548)", conf)
	}
	return nil
}

// isTerminal reports whether w is an interactive terminal (progress bars
// are redrawn there; elsewhere plain periodic lines are printed).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
