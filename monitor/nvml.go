package monitor

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// ErrNVMLUnavailable is returned by every NVML method when the library could
// not be initialised (no driver, no GPU) or has been closed.
var ErrNVMLUnavailable = errors.New("monitor: NVML unavailable")

// NVML is what the monitor needs from NVIDIA's management library. Devices
// are named by PCI bus id (from cgotorch.CUDAPCIBusID), never by index:
// CUDA_VISIBLE_DEVICES and CUDA's ordering differ from NVML's.
//
// The product uses *NVMLLibrary (OpenNVML); tests of the decision logic use
// fakes. Implementations return ErrNVMLUnavailable (possibly wrapped) when
// they cannot answer.
type NVML interface {
	// Available reports whether NVML was initialised.
	Available() bool
	// DeviceMemory is the device's memory (v2 where the driver has it).
	DeviceMemory(pciBusID string) (DeviceMemory, error)
	// ComputeProcesses lists the processes with a compute context on the device.
	ComputeProcesses(pciBusID string) ([]GPUProcess, error)
	// DriverVersion is the driver's version string, for the OOM record.
	DriverVersion() (string, error)
	// Close releases the library; later calls report ErrNVMLUnavailable.
	Close() error
}

// DeviceMemory is one device's memory as NVML reports it.
type DeviceMemory struct {
	// TotalBytes, FreeBytes and UsedBytes are the device totals. With
	// Version 2, UsedBytes excludes the driver/firmware reservation, which
	// is ReservedBytes; with Version 1, UsedBytes includes it and
	// ReservedBytes is 0 (memory.md S3).
	TotalBytes, FreeBytes, UsedBytes, ReservedBytes int64
	// Version is 2 (nvmlDeviceGetMemoryInfo_v2) or 1 (the v1 fallback).
	Version int
}

// GPUProcess is one process with a compute context on a device.
type GPUProcess struct {
	// PID is the process id in the host's PID namespace.
	PID int `json:"pid"`
	// UsedBytes is all device memory the process uses (context, allocator
	// cache, libraries); valid only when UsedKnown (NVML reports "not
	// available" under some drivers and in MIG mode).
	UsedBytes int64 `json:"used_bytes"`
	UsedKnown bool  `json:"used_known"`
}

// NVMLLibrary is the go-nvml implementation of NVML. Every call is guarded:
// after a failed Init, any other nvml call would kill the process with a
// dynamic-linker error that recover cannot catch (binding.md §8), so each
// method checks the Init result first and returns ErrNVMLUnavailable
// without touching the library. Versioned symbols are probed with
// LookupSymbol before use. An NVMLLibrary belongs to one goroutine.
type NVMLLibrary struct {
	lib      nvml.Interface
	ok       bool // Init returned SUCCESS and Close has not run
	initRet  nvml.Return
	hasMemV2 bool
	devices  map[string]nvml.Device // by normalised PCI bus id
}

// OpenNVML initialises NVML through go-nvml's default library
// (libnvidia-ml.so.1, opened with dlopen at this call). On a machine without
// the driver it returns a usable *NVMLLibrary whose methods all report
// ErrNVMLUnavailable, and an error wrapping both ErrNVMLUnavailable and the
// nvml.Return (typically nvml.ERROR_LIBRARY_NOT_FOUND).
func OpenNVML() (*NVMLLibrary, error) { return openNVMLWith(nvml.New()) }

// openNVMLWith initialises the given go-nvml interface (go-nvml's mocks in tests).
func openNVMLWith(lib nvml.Interface) (*NVMLLibrary, error) {
	l := &NVMLLibrary{lib: lib, devices: map[string]nvml.Device{}}
	l.initRet = lib.Init()
	if l.initRet != nvml.SUCCESS {
		return l, fmt.Errorf("%w: nvml.Init: %w", ErrNVMLUnavailable, l.initRet)
	}
	l.ok = true
	l.hasMemV2 = lib.Extensions().LookupSymbol("nvmlDeviceGetMemoryInfo_v2") == nil
	return l, nil
}

// Available reports whether NVML was initialised and not closed.
func (l *NVMLLibrary) Available() bool { return l != nil && l.ok }

// InitResult is the nvml.Return of Init (nvml.SUCCESS when available).
func (l *NVMLLibrary) InitResult() nvml.Return { return l.initRet }

func (l *NVMLLibrary) unavailable(op string) error {
	return fmt.Errorf("%w: %s (nvml.Init: %v)", ErrNVMLUnavailable, op, l.initRet)
}

func nvmlErr(op string, r nvml.Return) error { return fmt.Errorf("monitor: nvml %s: %w", op, r) }

// device finds the NVML handle for a PCI bus id, first directly, then by
// comparing the normalised bus ids of all devices (domain widths differ:
// CUDA says 0000:3B:00.0, NVML 00000000:3B:00.0).
func (l *NVMLLibrary) device(busID string) (nvml.Device, error) {
	key := NormalizePCIBusID(busID)
	if d, ok := l.devices[key]; ok {
		return d, nil
	}
	if d, r := l.lib.DeviceGetHandleByPciBusId(busID); r == nvml.SUCCESS {
		l.devices[key] = d
		return d, nil
	}
	n, r := l.lib.DeviceGetCount()
	if r != nvml.SUCCESS {
		return nil, nvmlErr("DeviceGetCount", r)
	}
	for i := 0; i < n; i++ {
		d, r := l.lib.DeviceGetHandleByIndex(i)
		if r != nvml.SUCCESS {
			continue
		}
		pci, r := d.GetPciInfo()
		if r != nvml.SUCCESS {
			continue
		}
		if NormalizePCIBusID(cString(pci.BusId[:])) == key {
			l.devices[key] = d
			return d, nil
		}
	}
	return nil, fmt.Errorf("monitor: no NVML device with PCI bus id %q", busID)
}

// DeviceMemory reads the device's memory with nvmlDeviceGetMemoryInfo_v2
// when the driver exports it, else with v1 (labelled by Version).
func (l *NVMLLibrary) DeviceMemory(busID string) (DeviceMemory, error) {
	if !l.Available() {
		return DeviceMemory{}, l.unavailable("DeviceMemory")
	}
	d, err := l.device(busID)
	if err != nil {
		return DeviceMemory{}, err
	}
	if l.hasMemV2 {
		m, r := d.GetMemoryInfo_v2()
		if r == nvml.SUCCESS {
			return DeviceMemory{TotalBytes: int64(m.Total), FreeBytes: int64(m.Free), UsedBytes: int64(m.Used),
				ReservedBytes: int64(m.Reserved), Version: 2}, nil
		}
		// Some drivers export the symbol but answer NOT_SUPPORTED or a
		// version mismatch: fall back to v1 from now on.
		l.hasMemV2 = false
	}
	m, r := d.GetMemoryInfo()
	if r != nvml.SUCCESS {
		return DeviceMemory{}, nvmlErr("DeviceGetMemoryInfo", r)
	}
	return DeviceMemory{TotalBytes: int64(m.Total), FreeBytes: int64(m.Free), UsedBytes: int64(m.Used), Version: 1}, nil
}

// ComputeProcesses lists compute processes on the device (go-nvml picks the
// v3/v2/v1 symbol at load and grows its buffer as needed).
func (l *NVMLLibrary) ComputeProcesses(busID string) ([]GPUProcess, error) {
	if !l.Available() {
		return nil, l.unavailable("ComputeProcesses")
	}
	d, err := l.device(busID)
	if err != nil {
		return nil, err
	}
	ps, r := d.GetComputeRunningProcesses()
	if r != nvml.SUCCESS {
		return nil, nvmlErr("DeviceGetComputeRunningProcesses", r)
	}
	out := make([]GPUProcess, 0, len(ps))
	for _, p := range ps {
		// NVML_VALUE_NOT_AVAILABLE is (unsigned long long)-1.
		known := p.UsedGpuMemory != ^uint64(0)
		var used int64
		if known {
			used = int64(p.UsedGpuMemory)
		}
		out = append(out, GPUProcess{PID: int(p.Pid), UsedBytes: used, UsedKnown: known})
	}
	return out, nil
}

// DriverVersion is the NVIDIA driver's version.
func (l *NVMLLibrary) DriverVersion() (string, error) {
	if !l.Available() {
		return "", l.unavailable("DriverVersion")
	}
	v, r := l.lib.SystemGetDriverVersion()
	if r != nvml.SUCCESS {
		return "", nvmlErr("SystemGetDriverVersion", r)
	}
	return v, nil
}

// Close shuts NVML down if Init succeeded (Shutdown after a failed Init is
// never called). It is idempotent.
func (l *NVMLLibrary) Close() error {
	if !l.Available() {
		return nil
	}
	l.ok = false
	clear(l.devices)
	if r := l.lib.Shutdown(); r != nvml.SUCCESS {
		return nvmlErr("Shutdown", r)
	}
	return nil
}

// NormalizePCIBusID puts a PCI bus id into one canonical form,
// "dddddddd:bb:dd.f" in lower-case hex with an 8-digit domain, so that CUDA's
// "0000:3B:00.0" and NVML's "00000000:3B:00.0" compare equal. Ids it cannot
// parse are returned lower-cased and trimmed.
func NormalizePCIBusID(id string) string {
	s := strings.ToLower(strings.TrimSpace(id))
	parts := strings.Split(s, ":")
	var dom, bus, devfn string
	switch len(parts) {
	case 3:
		dom, bus, devfn = parts[0], parts[1], parts[2]
	case 2:
		dom, bus, devfn = "0", parts[0], parts[1]
	default:
		return s
	}
	dev, fn, found := strings.Cut(devfn, ".")
	if !found {
		fn = "0"
	}
	vals := make([]uint64, 4)
	for i, p := range []string{dom, bus, dev, fn} {
		v, err := strconv.ParseUint(p, 16, 32)
		if err != nil {
			return s
		}
		vals[i] = v
	}
	return fmt.Sprintf("%08x:%02x:%02x.%x", vals[0], vals[1], vals[2], vals[3])
}

// cString converts a NUL-terminated C char array (go-nvml's [N]int8) to a string.
func cString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

// splitProcesses finds this process (by PID) in a device's process list and
// returns it and everyone else. self is nil when the PID is not listed
// (unknown, not zero: PID namespaces differ in containers, memory.md S4).
func splitProcesses(ps []GPUProcess, pid int) (self *GPUProcess, others []GPUProcess) {
	for i := range ps {
		if ps[i].PID == pid {
			p := ps[i]
			self = &p
			continue
		}
		others = append(others, ps[i])
	}
	return self, others
}
