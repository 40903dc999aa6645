package monitor

import (
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/scdiffusion/gotorch-train/cgotorch"
)

// CleanupNotice is the line CleanupMemory prints, exactly as in the user
// guide (memory.md U4).
const CleanupNotice = "Memory cleanup completed"

// CleanupResult is what one CleanupMemory call did and cost (memory.md M5).
type CleanupResult struct {
	// Step is the last step the monitor sampled (LogMemoryUsage), or the
	// step OnStep cleaned up at.
	Step int `json:"step"`
	// GoGC is the time of debug.FreeOSMemory (a forced collection that
	// returns freed Go heap to the OS); EmptyCache the time of the CUDA
	// allocator's emptyCache (0 without CUDA); Total the whole call.
	GoGC       time.Duration `json:"go_gc_ns"`
	EmptyCache time.Duration `json:"empty_cache_ns"`
	// HostTrim is the time of cgotorch.MallocTrim, which hands the host
	// tensor memory glibc keeps for reuse back to the system.
	HostTrim time.Duration `json:"host_trim_ns"`
	Total    time.Duration `json:"total_ns"`
	// EmptiedCache reports whether emptyCache ran; EmptyCacheErr is its
	// error, if any (never cgotorch.ErrNoCUDA: without CUDA it is not called).
	EmptiedCache  bool  `json:"emptied_cache"`
	EmptyCacheErr error `json:"-"`
	// RSS before and after, valid when RSSValid.
	RSSBefore int64 `json:"rss_before_bytes"`
	RSSAfter  int64 `json:"rss_after_bytes"`
	RSSValid  bool  `json:"rss_valid"`
	// Reserved (GPU Cached) before and after, valid when ReservedValid.
	ReservedBefore int64 `json:"reserved_before_bytes"`
	ReservedAfter  int64 `json:"reserved_after_bytes"`
	ReservedValid  bool  `json:"reserved_valid"`
	// NVML process memory before and after, valid when ProcessGPUValid.
	ProcessGPUBefore int64 `json:"process_gpu_before_bytes"`
	ProcessGPUAfter  int64 `json:"process_gpu_after_bytes"`
	ProcessGPUValid  bool  `json:"process_gpu_valid"`
}

// ReleasedReserved is the allocator cache returned to the driver (0 if unknown).
func (r CleanupResult) ReleasedReserved() int64 {
	if !r.ReservedValid {
		return 0
	}
	return r.ReservedBefore - r.ReservedAfter
}

// ReleasedRSS is the drop in RSS across the call (0 if unknown; may be negative).
func (r CleanupResult) ReleasedRSS() int64 {
	if !r.RSSValid {
		return 0
	}
	return r.RSSBefore - r.RSSAfter
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + "ms"
}

// DetailLine is the line printed after the notice, e.g.
//
//	cleanup: CPU 2048.5MB → 2040.1MB, GPU Cached 1024.1MB → 512.0MB in 4.6ms (Go GC 1.2ms, host trim 0.1ms, emptyCache 3.4ms)
//
// Without CUDA the GPU part is absent and emptyCache reads "n/a".
func (r CleanupResult) DetailLine() string {
	var b strings.Builder
	b.WriteString("  cleanup: CPU ")
	if r.RSSValid {
		b.WriteString(fmtMB(r.RSSBefore) + " → " + fmtMB(r.RSSAfter))
	} else {
		b.WriteString("n/a")
	}
	if r.ReservedValid {
		b.WriteString(", GPU Cached " + fmtMB(r.ReservedBefore) + " → " + fmtMB(r.ReservedAfter))
	}
	if r.ProcessGPUValid {
		b.WriteString(", GPU process " + fmtMB(r.ProcessGPUBefore) + " → " + fmtMB(r.ProcessGPUAfter))
	}
	ec := "n/a"
	if r.EmptiedCache {
		ec = ms(r.EmptyCache)
		if r.EmptyCacheErr != nil {
			ec += " (failed: " + r.EmptyCacheErr.Error() + ")"
		}
	}
	fmt.Fprintf(&b, " in %s (Go GC %s, host trim %s, emptyCache %s)", ms(r.Total), ms(r.GoGC), ms(r.HostTrim), ec)
	return b.String()
}

// cleanup runs the U14 cleanup: a forced Go collection that returns freed
// heap to the OS, then the CUDA allocator's emptyCache when CUDA is in use.
// Tensor handles are not touched: scopes own them.
func (m *Monitor) cleanup() CleanupResult {
	r := CleanupResult{Step: m.lastStep}
	t0 := time.Now()
	r.RSSBefore, r.RSSValid = m.sp.host.rss()
	if m.sp.cuda {
		if st, err := cgotorch.CUDAMemoryStats(m.sp.device, false); err == nil {
			r.ReservedBefore, r.ReservedValid = st.ReservedBytes, true
		}
	}
	var nv Sample
	m.sp.sampleNVML(&nv)
	r.ProcessGPUBefore = nv.ProcessGPUBytes

	tg := time.Now()
	// FreeOSMemory forces a collection (runtime.GC) and then returns as
	// much freed heap to the OS as possible; a separate runtime.GC first
	// would only collect twice.
	debug.FreeOSMemory()
	r.GoGC = time.Since(tg)
	// Freed host tensor memory stays in glibc's heap for reuse (cgotorch
	// tunes malloc so steps do not page-fault); hand it back here.
	tt := time.Now()
	cgotorch.MallocTrim()
	r.HostTrim = time.Since(tt)

	if m.sp.cuda {
		te := time.Now()
		r.EmptyCacheErr = cgotorch.EmptyCache()
		r.EmptyCache = time.Since(te)
		r.EmptiedCache = true
	}

	rss, ok := m.sp.host.rss()
	r.RSSAfter, r.RSSValid = rss, r.RSSValid && ok
	if r.ReservedValid {
		if st, err := cgotorch.CUDAMemoryStats(m.sp.device, false); err == nil {
			r.ReservedAfter = st.ReservedBytes
		} else {
			r.ReservedValid = false
		}
	}
	if nv.ProcessGPUValid {
		var after Sample
		m.sp.sampleNVML(&after)
		r.ProcessGPUAfter, r.ProcessGPUValid = after.ProcessGPUBytes, after.ProcessGPUValid
	}
	r.Total = time.Since(t0)
	return r
}
