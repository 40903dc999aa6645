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
	"github.com/scdiffusion/gotorch-train/monitor"
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
		&cli.StringFlag{Name: "device", Value: "cpu", Usage: "`DEVICE` to run on: cpu, cuda or cuda:N", EnvVars: env("device"), Category: catSystem,
			Action: parsedBy("device", "cpu, cuda or cuda:N", func(v string) error { _, err := ct.ParseDevice(v); return err })},
		&cli.IntFlag{Name: "threads", Value: 0, Usage: "intra-op `THREADS` for libtorch and OpenBLAS (0: OMP_NUM_THREADS or all cores)", EnvVars: env("threads"), Category: catSystem,
			Action: intBetween("threads", 0, 1024)},
		&cli.StringFlag{Name: "alloc_conf", Usage: "CUDA caching allocator `SETTINGS` (e.g. expandable_segments:True), exported as PYTORCH_CUDA_ALLOC_CONF and PYTORCH_ALLOC_CONF " +
			"before the first CUDA allocation; overrides both (default: their value from the environment, which must agree when both are set)", EnvVars: env("alloc_conf"), Category: catMemory},
	}
}

// setup initialises libtorch from the runtime flags and returns the device.
// It must run before any tensor work (thread count, allocator settings).
// It changes nothing on disk; the allocator settings are checked (the flag
// and both environment variables) and exported for libtorch.
func setup(c *cli.Context) (ct.Device, error) {
	dev, err := ct.ParseDevice(c.String("device"))
	if err != nil {
		return dev, usagef("--device %q: %v", c.String("device"), err)
	}
	conf, _, err := allocConf(c)
	if err != nil {
		return dev, err
	}
	b, err := ct.Init(ct.Config{Threads: threads(c), AllocConf: conf})
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

// allocConf resolves and checks the allocator settings: --alloc_conf (or
// GOTORCH_ALLOC_CONF) wins; else PYTORCH_CUDA_ALLOC_CONF and
// PYTORCH_ALLOC_CONF from the environment, which must agree when both are
// set (libtorch releases disagree on which of them wins). The value is
// validated against the running libtorch (monitor.ValidateAllocConf), its
// warnings printed; source names where it came from ("" when unset).
func allocConf(c *cli.Context) (conf, source string, err error) {
	cuda, generic := os.Getenv(ct.AllocConfEnv[0]), os.Getenv(ct.AllocConfEnv[1])
	switch {
	case c.String("alloc_conf") != "":
		conf, source = c.String("alloc_conf"), "--alloc_conf"
		for _, name := range ct.AllocConfEnv {
			if v := os.Getenv(name); v != "" && v != conf {
				fmt.Fprintf(c.App.Writer, "note: --alloc_conf %q replaces %s=%q for this run\n", conf, name, v)
			}
		}
	case cuda != "" && generic != "" && cuda != generic:
		return "", "", usagef("%s=%q and %s=%q disagree (libtorch releases differ in which one wins): unset one, or give --alloc_conf",
			ct.AllocConfEnv[0], cuda, ct.AllocConfEnv[1], generic)
	case cuda != "":
		conf, source = cuda, ct.AllocConfEnv[0]
	case generic != "":
		conf, source = generic, ct.AllocConfEnv[1]
	default:
		return "", "", nil
	}
	major, minor, _ := monitor.ParseTorchVersion(ct.Build().TorchVersion)
	warnings, err := monitor.ValidateAllocConf(conf, major, minor)
	if err != nil {
		return "", "", usagef("%s %q: %v", source, conf, err)
	}
	for _, w := range warnings {
		fmt.Fprintf(c.App.Writer, "warning: %s: %s\n", source, w)
	}
	return conf, source, nil
}

// allocLine describes the allocator settings: as configured (and where
// from) and as libtorch parsed them, where it can tell.
func allocLine() string {
	conf := "(unset: the allocator's defaults)"
	for _, name := range ct.AllocConfEnv {
		if v := os.Getenv(name); v != "" {
			conf = v
			break
		}
	}
	text, _, err := ct.AllocConfReadback()
	if err != nil {
		text = "unknown (" + err.Error() + ")"
	}
	return "allocator: configured " + conf + "; in effect: " + text
}

// printHeader writes the run header: the version line and the allocator
// settings.
func printHeader(w io.Writer) {
	fmt.Fprintln(w, versionLine())
	fmt.Fprintln(w, allocLine())
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
