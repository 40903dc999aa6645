package monitor

import (
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/scdiffusion/gotorch-train/cgotorch"
)

// The tests in this file need the CUDA flavour on a GPU machine; they skip
// elsewhere, or fail when CGOTORCH_REQUIRE_CUDA is set (binding.md §10).

func requireCUDA(t *testing.T) {
	t.Helper()
	if cgotorch.CUDAIsAvailable() {
		if err := cgotorch.CUDAInit(0); err != nil {
			t.Fatal(err)
		}
		return
	}
	if os.Getenv("CGOTORCH_REQUIRE_CUDA") != "" {
		t.Fatal("CGOTORCH_REQUIRE_CUDA is set but CUDA is not available")
	}
	t.Skip("no CUDA")
}

func TestNVMLOnGPU(t *testing.T) {
	requireCUDA(t)
	l, err := OpenNVML()
	if err != nil {
		t.Fatalf("OpenNVML on a GPU machine: %v (is libnvidia-ml.so.1 on the library path?)", err)
	}
	defer l.Close()
	bus, err := cgotorch.CUDAPCIBusID(0)
	if err != nil {
		t.Fatal(err)
	}
	dm, err := l.DeviceMemory(bus)
	if err != nil || dm.TotalBytes <= 0 || dm.FreeBytes <= 0 || dm.FreeBytes > dm.TotalBytes {
		t.Fatalf("DeviceMemory(%s) = %+v, %v", bus, dm, err)
	}
	ps, err := l.ComputeProcesses(bus)
	if err != nil {
		t.Fatal(err)
	}
	self, others := splitProcesses(ps, os.Getpid())
	v, _ := l.DriverVersion()
	t.Logf("bus %s, driver %s, memory v%d %+v, self %+v, %d others", bus, v, dm.Version, dm, self, len(others))
	if self == nil {
		t.Log("this process is not in the NVML process list (PID namespace?): its usage is reported as unknown")
	}
}

var gpuStepRE = regexp.MustCompile(`^Step 7: CPU: \d+\.\dMB, GPU: \d+\.\dMB, GPU Cached: \d+\.\dMB$`)

func TestCUDASampleStepLineCleanup(t *testing.T) {
	requireCUDA(t)
	base := cgotorch.LiveTensors()
	m, buf := newTestMonitor(t, Options{LogInterval: 1})
	if !m.CUDA() {
		t.Fatal("monitor does not read CUDA statistics")
	}
	before, _ := cgotorch.CUDAMemoryStats(0, false)
	s := cgotorch.NewScope()
	x := s.Full(1, cgotorch.Options{Device: cgotorch.CUDA(0)}, 16, 1<<20) // 64 MiB
	sm, _ := m.LogMemoryUsage(7)
	if !sm.CUDAValid || sm.CUDA.AllocatedBytes-before.AllocatedBytes != 64*MiB {
		t.Fatalf("allocated %d → %d", before.AllocatedBytes, sm.CUDA.AllocatedBytes)
	}
	if line := strings.TrimSpace(buf.String()); !gpuStepRE.MatchString(line) {
		t.Fatalf("Step line %q", line)
	}
	if m.NVMLStatus() == nil && (!sm.NVMLValid || sm.Device.TotalBytes <= 0) {
		t.Fatalf("NVML figures invalid: %+v", sm)
	}
	_ = x
	s.Close()
	r := m.CleanupMemory()
	if !r.EmptiedCache || r.EmptyCacheErr != nil || !r.ReservedValid || r.ReservedAfter >= r.ReservedBefore {
		t.Fatalf("cleanup %+v", r)
	}
	t.Logf("%s\n%s", buf.String(), r.DetailLine())
	if cgotorch.LiveTensors() != base {
		t.Fatal("tensor leaked")
	}
}

func TestGuardRealCUDAOOM(t *testing.T) {
	requireCUDA(t)
	base := cgotorch.LiveTensors()
	m, buf := newTestMonitor(t, Options{Run: RunContext{BatchSize: 64, Microbatch: 16}})
	err := m.Guard(func() error {
		s := cgotorch.NewScope()
		defer s.Close()
		s.Empty(cgotorch.Options{Device: cgotorch.CUDA(0)}, 1<<40) // 4 TiB
		return nil
	})
	var oe *OOMError
	if !errors.As(err, &oe) || !errors.Is(err, cgotorch.ErrOutOfMemory) {
		t.Fatalf("Guard = %v", err)
	}
	rep := oe.Report
	if rep.Headline != "CUDA out of memory" || rep.Diagnosis.Cause != CauseCapacity || rep.Parsed.RequestedBytes != 4<<40 ||
		rep.Summary.NumOOMs == nil || *rep.Summary.NumOOMs < 1 {
		t.Fatalf("report %+v\n%s", rep.Diagnosis, buf.String())
	}
	t.Log(buf.String())
	// The process keeps working.
	s := cgotorch.NewScope()
	if v := s.Full(2, cgotorch.Options{Device: cgotorch.CUDA(0)}, 4).Sum().Item(); v != 8 {
		t.Fatalf("after OOM: %v", v)
	}
	s.Close()
	if cgotorch.LiveTensors() != base {
		t.Fatal("tensor leaked")
	}
}
