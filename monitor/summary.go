package monitor

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// peaks are the largest figures seen over all samples.
type peaks struct {
	rss, hwm, cpuTensors, gpuAlloc, gpuReserved, procGPU, live int64
	rssOK, hwmOK, cpuOK, gpuOK, procOK                         bool
}

func (p *peaks) observe(s *Sample) {
	up := func(v *int64, ok *bool, x int64, valid bool) {
		if valid {
			*v, *ok = max(*v, x), true
		}
	}
	up(&p.rss, &p.rssOK, s.RSSBytes, s.RSSValid)
	up(&p.hwm, &p.hwmOK, s.PeakRSSBytes, s.PeakRSSValid)
	up(&p.cpuTensors, &p.cpuOK, max(s.CPUTensorBytes, s.CPUTensorPeakBytes), s.CPUAllocValid)
	up(&p.gpuAlloc, &p.gpuOK, max(s.CUDA.AllocatedBytes, s.CUDA.PeakAllocatedBytes), s.CUDAValid)
	up(&p.gpuReserved, &p.gpuOK, max(s.CUDA.ReservedBytes, s.CUDA.PeakReservedBytes), s.CUDAValid)
	up(&p.procGPU, &p.procOK, s.ProcessGPUBytes, s.ProcessGPUValid)
	p.live = max(p.live, s.LiveTensors)
}

// cleanupStats accumulates CleanupMemory results; durations of the last
// 256 calls are kept for the median and p95 (M5).
type cleanupStats struct {
	n                     int
	total, gc, emptyCache time.Duration
	releasedReserved      int64
	releasedRSS           int64
	recent                [256]time.Duration
}

func (c *cleanupStats) add(r CleanupResult) {
	c.recent[c.n%len(c.recent)] = r.Total
	c.n++
	c.total += r.Total
	c.gc += r.GoGC
	c.emptyCache += r.EmptyCache
	c.releasedReserved += r.ReleasedReserved()
	c.releasedRSS += r.ReleasedRSS()
}

func (c *cleanupStats) quantiles() (median, p95 time.Duration) {
	k := min(c.n, len(c.recent))
	if k == 0 {
		return 0, 0
	}
	d := slices.Clone(c.recent[:k])
	slices.Sort(d)
	return d[(k-1)/2], d[min(k-1, (k*95+99)/100-1)]
}

// Summary is the state of a run's memory: peaks, the last sample, cleanup
// totals and leak verdicts.
type Summary struct {
	// Samples is the number of samples taken; Last the latest (valid when
	// Samples > 0).
	Samples int    `json:"samples"`
	Last    Sample `json:"last"`

	// Peaks over all samples; each is valid when its flag is set.
	// PeakRSSBytes is the largest sampled RSS, PeakHWMBytes the kernel's
	// VmHWM (which also covers the time between samples).
	PeakRSSBytes          int64 `json:"peak_rss_bytes"`
	PeakHWMBytes          int64 `json:"peak_hwm_bytes"`
	PeakCPUTensorBytes    int64 `json:"peak_cpu_tensor_bytes"`
	PeakGPUAllocatedBytes int64 `json:"peak_gpu_allocated_bytes"`
	PeakGPUReservedBytes  int64 `json:"peak_gpu_reserved_bytes"`
	PeakProcessGPUBytes   int64 `json:"peak_process_gpu_bytes"`
	MaxLiveTensors        int64 `json:"max_live_tensors"`
	RSSValid              bool  `json:"rss_valid"`
	HWMValid              bool  `json:"hwm_valid"`
	CPUTensorsValid       bool  `json:"cpu_tensors_valid"`
	GPUValid              bool  `json:"gpu_valid"`
	ProcessGPUValid       bool  `json:"process_gpu_valid"`

	// Cleanups counts CleanupMemory calls, with their total time split
	// into Go GC and emptyCache, median and p95 of the last 256, and the
	// reserved and RSS bytes they released in total.
	Cleanups              int           `json:"cleanups"`
	CleanupTime           time.Duration `json:"cleanup_ns"`
	CleanupGoGC           time.Duration `json:"cleanup_go_gc_ns"`
	CleanupEmptyCache     time.Duration `json:"cleanup_empty_cache_ns"`
	CleanupMedian         time.Duration `json:"cleanup_median_ns"`
	CleanupP95            time.Duration `json:"cleanup_p95_ns"`
	ReleasedReservedBytes int64         `json:"released_reserved_bytes"`
	ReleasedRSSBytes      int64         `json:"released_rss_bytes"`

	// OOMs counts reported out-of-memory errors; HostWarnings and
	// CoTenantChanges the warnings printed.
	OOMs            int `json:"ooms"`
	HostWarnings    int `json:"host_warnings"`
	CoTenantChanges int `json:"co_tenant_changes"`
	// AllocRetryRises counts samples at which num_alloc_retries had risen.
	AllocRetryRises int `json:"alloc_retry_rises"`

	// Leaks are the leak verdicts per series (empty before warm-up ends);
	// LeakAlarm is set if any series is alarming now.
	Leaks     []LeakVerdict `json:"leaks"`
	LeakAlarm bool          `json:"leak_alarm"`
}

// Summary reports the run so far. It runs the full leak estimate (a few
// milliseconds); call it at the end or occasionally, not every step.
func (m *Monitor) Summary() Summary {
	p := m.peaks
	s := Summary{Samples: m.samples, Last: m.last,
		PeakRSSBytes: p.rss, PeakHWMBytes: p.hwm, PeakCPUTensorBytes: p.cpuTensors, PeakGPUAllocatedBytes: p.gpuAlloc,
		PeakGPUReservedBytes: p.gpuReserved, PeakProcessGPUBytes: p.procGPU, MaxLiveTensors: p.live,
		RSSValid: p.rssOK, HWMValid: p.hwmOK, CPUTensorsValid: p.cpuOK, GPUValid: p.gpuOK, ProcessGPUValid: p.procOK,
		Cleanups: m.cleanups.n, CleanupTime: m.cleanups.total, CleanupGoGC: m.cleanups.gc, CleanupEmptyCache: m.cleanups.emptyCache,
		ReleasedReservedBytes: m.cleanups.releasedReserved, ReleasedRSSBytes: m.cleanups.releasedRSS,
		OOMs: m.ooms, HostWarnings: m.hostWarns, CoTenantChanges: m.tenantMoves, AllocRetryRises: m.retries.rises,
		Leaks: m.leak.Verdicts()}
	s.CleanupMedian, s.CleanupP95 = m.cleanups.quantiles()
	for _, v := range s.Leaks {
		s.LeakAlarm = s.LeakAlarm || v.Alarm
	}
	return s
}

// Lines renders the summary for the end of a run: peaks, cleanup cost,
// warnings and leak verdicts, e.g.
//
//	Memory summary: 31 samples; peak RSS 412.3 MiB (VmHWM 420.1 MiB), peak CPU tensors 96.0 MiB, at most 310 live tensors
//	Cleanup: 4 runs, 12.5ms in total (Go GC 10.1ms, emptyCache 0.0ms), median 3.1ms, p95 4.0ms; released 0.0 MiB reserved, 1.2 MiB RSS
//	Warnings: 0 out-of-memory, 0 host memory, 0 co-tenant changes, 0 allocator-retry rises; leaks: none
func (s Summary) Lines() []string {
	if s.Samples == 0 && s.Cleanups == 0 && s.OOMs == 0 {
		return []string{"Memory summary: no samples were taken"}
	}
	var peaks []string
	if s.RSSValid {
		p := "peak RSS " + fmtSize(s.PeakRSSBytes)
		if s.HWMValid {
			p += " (VmHWM " + fmtSize(s.PeakHWMBytes) + ")"
		}
		peaks = append(peaks, p)
	}
	if s.CPUTensorsValid {
		peaks = append(peaks, "peak CPU tensors "+fmtSize(s.PeakCPUTensorBytes))
	}
	if s.GPUValid {
		peaks = append(peaks, "peak GPU allocated "+fmtSize(s.PeakGPUAllocatedBytes)+", reserved "+fmtSize(s.PeakGPUReservedBytes))
	}
	if s.ProcessGPUValid {
		peaks = append(peaks, "peak GPU process (NVML) "+fmtSize(s.PeakProcessGPUBytes))
	}
	peaks = append(peaks, fmt.Sprintf("at most %d live tensors", s.MaxLiveTensors))
	lines := []string{fmt.Sprintf("Memory summary: %d samples; %s", s.Samples, strings.Join(peaks, ", "))}
	if s.Samples == 0 {
		lines[0] = "Memory summary: no samples were taken (the run ended before its first step)"
	}
	if s.Cleanups > 0 {
		runs := "runs"
		if s.Cleanups == 1 {
			runs = "run"
		}
		lines = append(lines, fmt.Sprintf("Cleanup: %d %s, %s in total (Go GC %s, emptyCache %s), median %s, p95 %s; released %s reserved, %s RSS",
			s.Cleanups, runs, ms(s.CleanupTime), ms(s.CleanupGoGC), ms(s.CleanupEmptyCache), ms(s.CleanupMedian), ms(s.CleanupP95),
			fmtSize(max(s.ReleasedReservedBytes, 0)), fmtSize(max(s.ReleasedRSSBytes, 0))))
	} else {
		lines = append(lines, "Cleanup: none ran")
	}
	leaks := "none"
	var alarming []string
	for _, v := range s.Leaks {
		if v.Alarm {
			alarming = append(alarming, v.Series)
		}
	}
	switch {
	case len(alarming) > 0:
		leaks = "rising: " + strings.Join(alarming, ", ")
	case len(s.Leaks) == 0:
		leaks = "not tested (the run ended before the warm-up)"
	}
	lines = append(lines, fmt.Sprintf("Warnings: %d out-of-memory, %d host memory, %d co-tenant changes, %d allocator-retry rises; leaks: %s",
		s.OOMs, s.HostWarnings, s.CoTenantChanges, s.AllocRetryRises, leaks))
	return lines
}
