package monitor

import (
	"time"

	"github.com/scdiffusion/gotorch-train/cgotorch"
)

// Sample is one reading of every memory figure the monitor watches, taken
// at the step boundary. Each group has a validity flag; an invalid figure is
// unknown, not zero (for example, GPU fields on a machine without CUDA).
type Sample struct {
	// Step is the training step the sample belongs to; Time when it was taken.
	Step int
	Time time.Time

	// RSSBytes is this process's resident set size (gopsutil, statm).
	RSSBytes int64
	RSSValid bool
	// PeakRSSBytes is VmHWM from /proc/self/status (getrusage as fallback).
	PeakRSSBytes int64
	PeakRSSValid bool

	// SysTotalBytes and SysAvailableBytes are the host's memory (/proc/meminfo).
	SysTotalBytes, SysAvailableBytes int64
	SysValid                         bool
	// CgroupLimitBytes is the cgroup memory limit, valid when CgroupLimited.
	CgroupLimitBytes int64
	CgroupLimited    bool

	// LiveTensors is the number of live cgotorch tensor handles (always valid).
	LiveTensors int64
	// CPUTensorBytes and CPUTensorPeakBytes are the bytes held by cgotorch's
	// tracking CPU allocator (host tensors); CPUOOMs counts its failures.
	// Valid when the allocator is installed (cgotorch.Init's default).
	CPUTensorBytes, CPUTensorPeakBytes int64
	CPUOOMs                            int64
	CPUAllocLimitBytes                 int64 // 0: no limit set
	CPUAllocValid                      bool

	// CUDA is the caching allocator's statistics for the watched device,
	// valid when CUDAValid (CUDA flavour with a device).
	CUDA      cgotorch.CUDAMemStats
	CUDAValid bool

	// Device is the NVML view of the watched device, valid when NVMLValid.
	Device    DeviceMemory
	NVMLValid bool
	// ProcessGPUBytes is this process's device memory from the NVML process
	// list, valid when ProcessGPUValid (not found means unknown, not zero).
	ProcessGPUBytes int64
	ProcessGPUValid bool
	// OtherProcesses are the other processes on the device (valid with
	// NVMLValid); OtherProcessesBytes sums those whose usage is known.
	OtherProcesses      []GPUProcess
	OtherProcessesBytes int64
}

// NonAllocatorBytes is the device memory this process uses outside the
// caching allocator (CUDA context, cuBLAS/cuDNN workspaces): NVML process
// usage minus reserved (memory.md S4). ok is false unless both are known.
func (s *Sample) NonAllocatorBytes() (int64, bool) {
	if !s.CUDAValid || !s.ProcessGPUValid {
		return 0, false
	}
	return s.ProcessGPUBytes - s.CUDA.ReservedBytes, true
}

// sampler collects Samples. It holds the host reader, the NVML handle and
// the watched device's PCI bus id.
type sampler struct {
	host   *hostReader
	nvml   NVML   // nil: no NVML
	busID  string // "" : no NVML device
	device int    // CUDA ordinal
	cuda   bool   // CUDA flavour with a device: read allocator stats
	pid    int
	now    func() time.Time
}

// sample takes one Sample. It never fails: unreadable figures are invalid.
// With snapshot, the allocator's segments are walked for the largest free
// block (slow: for out-of-memory reports only).
func (sp *sampler) sample(step int, snapshot bool) Sample {
	s := Sample{Step: step, Time: sp.now()}
	s.RSSBytes, s.RSSValid = sp.host.rss()
	s.PeakRSSBytes, s.PeakRSSValid = sp.host.peakRSS()
	s.SysTotalBytes, s.SysAvailableBytes, s.SysValid = sp.host.system()
	if sp.host.cgroup.Limited {
		s.CgroupLimitBytes, s.CgroupLimited = sp.host.cgroup.Bytes, true
	}
	s.LiveTensors = cgotorch.LiveTensors()
	if c := cgotorch.CPUAllocatorStats(); c.Installed {
		s.CPUTensorBytes, s.CPUTensorPeakBytes, s.CPUOOMs = c.AllocatedBytes, c.PeakAllocatedBytes, c.NumOOMs
		s.CPUAllocLimitBytes, s.CPUAllocValid = c.LimitBytes, true
	}
	if sp.cuda {
		if st, err := cgotorch.CUDAMemoryStats(sp.device, snapshot); err == nil {
			s.CUDA, s.CUDAValid = st, true
		}
	}
	sp.sampleNVML(&s)
	return s
}

// sampleNVML fills the NVML fields of s from the device memory and the
// compute-process list.
func (sp *sampler) sampleNVML(s *Sample) {
	if sp.nvml == nil || sp.busID == "" || !sp.nvml.Available() {
		return
	}
	dm, err := sp.nvml.DeviceMemory(sp.busID)
	if err != nil {
		return
	}
	s.Device, s.NVMLValid = dm, true
	ps, err := sp.nvml.ComputeProcesses(sp.busID)
	if err != nil {
		return
	}
	self, others := splitProcesses(ps, sp.pid)
	if self != nil && self.UsedKnown {
		s.ProcessGPUBytes, s.ProcessGPUValid = self.UsedBytes, true
	}
	s.OtherProcesses = others
	for _, o := range others {
		if o.UsedKnown {
			s.OtherProcessesBytes += o.UsedBytes
		}
	}
}
