package main

import (
	"fmt"
	"os"
	"runtime"

	"github.com/urfave/cli/v2"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

func newInfoCommand() *cli.Command {
	return &cli.Command{
		Name:  "info",
		Usage: "print libtorch, CUDA, GPU, NVML, allocator and thread information",
		Flags: runtimeFlags(),
		Action: func(c *cli.Context) error {
			return runInfo(c)
		},
	}
}

func runInfo(c *cli.Context) error {
	out := c.App.Writer
	// The same checks as every command (device, threads, allocator settings
	// from --alloc_conf and the environment).
	if _, err := setup(c); err != nil {
		return err
	}
	b := ct.Build()
	fmt.Fprintf(out, "version: %s\n", versionLine())
	fmt.Fprintf(out, "gotorch-train: %s, Go %s %s/%s\n", b, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(out, "libtorch: %s (%s flavour, ABI %d)\n", b.TorchVersion, b.Flavour(), b.ABIVersion)
	fmt.Fprintf(out, "CUDA: available %v, %d device(s)\n", ct.CUDAIsAvailable(), ct.CUDADeviceCount())
	for i := 0; i < ct.CUDADeviceCount(); i++ {
		free, total, err := ct.CUDAMemGetInfo(i)
		bus, _ := ct.CUDAPCIBusID(i)
		if err != nil {
			fmt.Fprintf(out, "  cuda:%d: %v\n", i, err)
			continue
		}
		fmt.Fprintf(out, "  cuda:%d: PCI %s, %.1f GiB total, %.1f GiB free\n", i, bus, gib(total), gib(free))
	}
	fmt.Fprintf(out, "%s\n", nvmlInfo())
	fmt.Fprintln(out, allocLine())
	cpu := ct.CPUAllocatorStats()
	fmt.Fprintf(out, "CPU tensor allocator: tracked %v, %d bytes in use\n", cpu.Installed, cpu.AllocatedBytes)
	fmt.Fprintf(out, "threads: libtorch intra-op %d, GOMAXPROCS %d, CPUs %d, OMP_NUM_THREADS=%q, OMP_WAIT_POLICY=%q\n",
		ct.NumThreads(), runtime.GOMAXPROCS(0), runtime.NumCPU(), os.Getenv("OMP_NUM_THREADS"), os.Getenv("OMP_WAIT_POLICY"))
	if core := ct.OpenBLASCore(); core != "" {
		fmt.Fprintf(out, "OpenBLAS kernels: %s (OPENBLAS_CORETYPE=%q)\n", core, os.Getenv("OPENBLAS_CORETYPE"))
	}
	if p, err := ct.ParallelInfo(); err == nil {
		fmt.Fprintf(out, "parallel backends:\n%s\n", indent(p))
	}
	return nil
}

func gib(b int64) float64 { return float64(b) / (1 << 30) }

func indent(s string) string {
	out := "  "
	for _, r := range s {
		out += string(r)
		if r == '\n' {
			out += "  "
		}
	}
	return out
}
