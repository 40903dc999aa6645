package monitor

import (
	"errors"
	"os"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// TestOpenNVMLWithoutDriver runs the real go-nvml path on this machine:
// Init must fail cleanly (no libnvidia-ml.so.1) and every method must then
// report ErrNVMLUnavailable without calling into NVML (a call would kill
// the test binary with a dynamic-linker error, exit 127).
func TestOpenNVMLWithoutDriver(t *testing.T) {
	l, err := OpenNVML()
	if l.Available() {
		if os.Getenv("CGOTORCH_REQUIRE_CUDA") == "" {
			t.Skip("NVML is available here (GPU machine): covered by TestNVMLOnGPU")
		}
		return
	}
	if !errors.Is(err, ErrNVMLUnavailable) || !errors.Is(err, nvml.ERROR_LIBRARY_NOT_FOUND) {
		t.Fatalf("OpenNVML error = %v, want ErrNVMLUnavailable wrapping ERROR_LIBRARY_NOT_FOUND", err)
	}
	if l.InitResult() != nvml.ERROR_LIBRARY_NOT_FOUND {
		t.Fatalf("InitResult = %v", l.InitResult())
	}
	if _, err := l.DeviceMemory("0000:3B:00.0"); !errors.Is(err, ErrNVMLUnavailable) {
		t.Errorf("DeviceMemory: %v", err)
	}
	if _, err := l.ComputeProcesses("0000:3B:00.0"); !errors.Is(err, ErrNVMLUnavailable) {
		t.Errorf("ComputeProcesses: %v", err)
	}
	if _, err := l.DriverVersion(); !errors.Is(err, ErrNVMLUnavailable) {
		t.Errorf("DriverVersion: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	// Opening again after a failure must fail the same way, not crash.
	if l2, err := OpenNVML(); l2.Available() || !errors.Is(err, nvml.ERROR_LIBRARY_NOT_FOUND) {
		t.Fatalf("second OpenNVML: %v", err)
	}
}

// TestNVMLFailedInitCallsNothing uses go-nvml's mock, whose unset methods
// panic: after a failed Init nothing but Init may be called.
func TestNVMLFailedInitCallsNothing(t *testing.T) {
	m := &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_DRIVER_NOT_LOADED }}
	l, err := openNVMLWith(m)
	if err == nil || l.Available() {
		t.Fatal("want failure")
	}
	l.DeviceMemory("x")
	l.ComputeProcesses("x")
	l.DriverVersion()
	l.Close()
	if n := len(m.InitCalls()); n != 1 {
		t.Fatalf("Init called %d times", n)
	}
}

type mockGPU struct {
	v2Symbol bool
	v2Ret    nvml.Return
	byBusOK  bool
}

func (g mockGPU) lib(t *testing.T) (*mock.Interface, *mock.Device) {
	dev := &mock.Device{
		GetMemoryInfo_v2Func: func() (nvml.Memory_v2, nvml.Return) {
			return nvml.Memory_v2{Total: 16 << 30, Reserved: 300 << 20, Free: 10 << 30, Used: 16<<30 - 300<<20 - 10<<30}, g.v2Ret
		},
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			return nvml.Memory{Total: 16 << 30, Free: 10 << 30, Used: 6 << 30}, nvml.SUCCESS
		},
		GetComputeRunningProcessesFunc: func() ([]nvml.ProcessInfo, nvml.Return) {
			return []nvml.ProcessInfo{
				{Pid: 100, UsedGpuMemory: 2 << 30},
				{Pid: 200, UsedGpuMemory: ^uint64(0)}, // NVML_VALUE_NOT_AVAILABLE
			}, nvml.SUCCESS
		},
		GetPciInfoFunc: func() (nvml.PciInfo, nvml.Return) {
			var p nvml.PciInfo
			for i, c := range "00000000:3B:00.0" {
				p.BusId[i] = int8(c)
			}
			return p, nvml.SUCCESS
		},
	}
	other := &mock.Device{GetPciInfoFunc: func() (nvml.PciInfo, nvml.Return) {
		var p nvml.PciInfo
		for i, c := range "00000000:AF:00.0" {
			p.BusId[i] = int8(c)
		}
		return p, nvml.SUCCESS
	}}
	m := &mock.Interface{
		InitFunc:     func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc: func() nvml.Return { return nvml.SUCCESS },
		ExtensionsFunc: func() nvml.ExtendedInterface {
			return &mock.ExtendedInterface{LookupSymbolFunc: func(s string) error {
				if s == "nvmlDeviceGetMemoryInfo_v2" && g.v2Symbol {
					return nil
				}
				return errors.New("undefined symbol")
			}}
		},
		DeviceGetHandleByPciBusIdFunc: func(id string) (nvml.Device, nvml.Return) {
			if g.byBusOK && NormalizePCIBusID(id) == "00000000:3b:00.0" {
				return dev, nvml.SUCCESS
			}
			return nil, nvml.ERROR_NOT_FOUND
		},
		DeviceGetCountFunc: func() (int, nvml.Return) { return 2, nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if i == 0 {
				return other, nvml.SUCCESS
			}
			return dev, nvml.SUCCESS
		},
		SystemGetDriverVersionFunc: func() (string, nvml.Return) { return "580.65.06", nvml.SUCCESS },
	}
	return m, dev
}

func TestNVMLLibraryWithMock(t *testing.T) {
	cases := []struct {
		name     string
		gpu      mockGPU
		version  int
		reserved int64
	}{
		{"v2", mockGPU{v2Symbol: true, v2Ret: nvml.SUCCESS, byBusOK: true}, 2, 300 << 20},
		{"no v2 symbol: v1", mockGPU{v2Symbol: false, byBusOK: true}, 1, 0},
		{"v2 exported but unsupported: v1", mockGPU{v2Symbol: true, v2Ret: nvml.ERROR_NOT_SUPPORTED, byBusOK: true}, 1, 0},
		{"bus id found by enumeration", mockGPU{v2Symbol: true, v2Ret: nvml.SUCCESS, byBusOK: false}, 2, 300 << 20},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, dev := c.gpu.lib(t)
			l, err := openNVMLWith(m)
			if err != nil || !l.Available() {
				t.Fatal(err)
			}
			for range 2 { // the second call uses the cached handle / fallback decision
				dm, err := l.DeviceMemory("0000:3b:00.0")
				if err != nil {
					t.Fatal(err)
				}
				if dm.Version != c.version || dm.ReservedBytes != c.reserved || dm.TotalBytes != 16<<30 || dm.FreeBytes != 10<<30 {
					t.Fatalf("DeviceMemory = %+v", dm)
				}
			}
			if c.gpu.v2Symbol && c.gpu.v2Ret != nvml.SUCCESS && len(dev.GetMemoryInfo_v2Calls()) != 1 {
				t.Errorf("v2 retried after failing: %d calls", len(dev.GetMemoryInfo_v2Calls()))
			}
			if !c.gpu.v2Symbol && len(dev.GetMemoryInfo_v2Calls()) != 0 {
				t.Error("v2 called without the symbol")
			}
			ps, err := l.ComputeProcesses("0000:3B:00.0")
			if err != nil {
				t.Fatal(err)
			}
			want := []GPUProcess{{PID: 100, UsedBytes: 2 << 30, UsedKnown: true}, {PID: 200}}
			if len(ps) != 2 || ps[0] != want[0] || ps[1] != want[1] {
				t.Fatalf("processes = %+v", ps)
			}
			if v, _ := l.DriverVersion(); v != "580.65.06" {
				t.Errorf("driver %q", v)
			}
			if _, err := l.DeviceMemory("0000:01:00.0"); err == nil {
				t.Error("unknown bus id accepted")
			}
			if err := l.Close(); err != nil || l.Available() {
				t.Fatal(err)
			}
			if _, err := l.DeviceMemory("0000:3b:00.0"); !errors.Is(err, ErrNVMLUnavailable) {
				t.Errorf("after Close: %v", err)
			}
			if err := l.Close(); err != nil || len(m.ShutdownCalls()) != 1 {
				t.Errorf("second Close: %v, %d shutdowns", err, len(m.ShutdownCalls()))
			}
		})
	}
}

func TestNormalizePCIBusID(t *testing.T) {
	for in, want := range map[string]string{
		"0000:3B:00.0":     "00000000:3b:00.0",
		"00000000:3B:00.0": "00000000:3b:00.0",
		"3b:00.0":          "00000000:3b:00.0",
		" 0001:AF:1F.7 ":   "00000001:af:1f.7",
		"0000:3b:00":       "00000000:3b:00.0",
		"garbage":          "garbage",
	} {
		if got := NormalizePCIBusID(in); got != want {
			t.Errorf("NormalizePCIBusID(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSplitProcesses(t *testing.T) {
	ps := []GPUProcess{{PID: 1, UsedBytes: 5, UsedKnown: true}, {PID: 42, UsedBytes: 7, UsedKnown: true}, {PID: 3}}
	self, others := splitProcesses(ps, 42)
	if self == nil || self.UsedBytes != 7 || len(others) != 2 {
		t.Fatalf("self %v others %v", self, others)
	}
	self, others = splitProcesses(ps, 99)
	if self != nil || len(others) != 3 {
		t.Fatalf("absent PID: self %v others %v", self, others)
	}
}
