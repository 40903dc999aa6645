package monitor

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Cause is the classified reason for an out-of-memory error (memory.md X4).
type Cause string

// The causes, in the order Classify tests them.
const (
	// CauseHost: host memory (cgotorch's CPU allocator, its limit, or libtorch's CPU allocator).
	CauseHost Cause = "host"
	// CauseFragmentation: the cache held enough free bytes for the request,
	// but no free block was large enough.
	CauseFragmentation Cause = "fragmentation"
	// CauseCoTenant: other processes hold the memory that would have made it fit.
	CauseCoTenant Cause = "co-tenant"
	// CauseOverhead: a large share of this process's device memory lies
	// outside the allocator (CUDA context, cuBLAS/cuDNN workspaces).
	CauseOverhead Cause = "non-allocator overhead"
	// CauseCapacity: allocated + request exceeds what the device offers even
	// with a perfectly packed cache.
	CauseCapacity Cause = "capacity"
)

// Thresholds of Classify.
const (
	// typicalOverhead is what a CUDA context and default workspaces take.
	typicalOverhead = 512 * MiB
	// overheadLarge is the smallest non-allocator overhead blamed as a cause.
	overheadLarge = 1 * GiB
)

// Diagnosis is the classification of one out-of-memory error with the
// figures it rests on (-1: unknown).
type Diagnosis struct {
	// Cause is the classification.
	Cause Cause `json:"cause"`
	// Reason explains the classification with figures, in one sentence.
	Reason string `json:"reason"`
	// Basis names what the figures came from ("message", "allocator",
	// "nvml", ...), for judging how firm the diagnosis is.
	Basis []string `json:"basis"`

	// RequestedBytes is the failed allocation; AllocatedBytes and
	// ReservedBytes the allocator's figures at the failure (message) or at
	// report time; CacheFreeBytes their difference; LargestFreeBlock and
	// InactiveSplitBytes come from the report-time allocator snapshot.
	RequestedBytes     int64 `json:"requested_bytes"`
	AllocatedBytes     int64 `json:"allocated_bytes"`
	ReservedBytes      int64 `json:"reserved_bytes"`
	CacheFreeBytes     int64 `json:"cache_free_bytes"`
	LargestFreeBlock   int64 `json:"largest_free_block"`
	InactiveSplitBytes int64 `json:"inactive_split_bytes"`
	// LimitBytes is what the allocator can reach at most: the memory
	// fraction cap, else device total less the firmware reservation.
	LimitBytes int64 `json:"limit_bytes"`
	// DeviceFree is the device's free memory; OverheadBytes this process's
	// memory outside the allocator (NVML or message usage − reserved);
	// Others the other processes on the device, largest first, and
	// OthersBytes their known total.
	DeviceFree    int64        `json:"device_free_bytes"`
	OverheadBytes int64        `json:"overhead_bytes"`
	OthersBytes   int64        `json:"others_bytes"`
	Others        []GPUProcess `json:"others"`
}

// Classify determines the cause of an out-of-memory error from the parsed
// message (figures at the moment of failure), a sample taken at report time
// (allocator statistics with the largest free block, NVML), and this
// process's PID. Message figures win over the sample where both exist.
//
// A CPU-allocator message (or no CUDA at all) is host. Otherwise each
// cause is a factor that, removed alone, would have let the allocation
// succeed, and the largest such factor wins: fragmentation (the cache's
// free bytes, reserved − allocated, cover the request, yet no block fits:
// the allocator had already released what it could), co-tenant (other
// processes' memory, when allocated + request + this process's overhead
// fits the device without them; without NVML or a process list, device
// memory used outside the allocator counts, ≥ 1 GiB), non-allocator
// overhead (≥ 1 GiB outside the allocator, when the request would fit
// with a typical 512 MiB). If none would, the cause is capacity.
func Classify(msg OOMMessage, s *Sample, pid int) (d Diagnosis) {
	d = Diagnosis{RequestedBytes: msg.RequestedBytes, AllocatedBytes: -1, ReservedBytes: -1, CacheFreeBytes: -1,
		LargestFreeBlock: -1, InactiveSplitBytes: -1, LimitBytes: -1, DeviceFree: -1, OverheadBytes: -1, OthersBytes: -1}
	basis := map[string]bool{}
	use := func(v int64, src string) int64 {
		if v >= 0 {
			basis[src] = true
		}
		return v
	}
	defer func() {
		for k := range basis {
			d.Basis = append(d.Basis, k)
		}
		slices.Sort(d.Basis)
	}()
	if msg.RequestedBytes >= 0 {
		basis["message"] = true
	}
	if msg.Device == "cpu" || (msg.Device == "" && !s.CUDAValid) {
		d.Cause = CauseHost
		d.Reason = hostReason(msg, s)
		d.AllocatedBytes, d.LimitBytes = msg.CPUInUseBytes, msg.CPULimitBytes
		if s.CPUAllocValid {
			basis["cpu allocator"] = true
		}
		return d
	}
	// Allocator figures: the message's (at failure), else the sample's.
	d.AllocatedBytes = use(msg.AllocatedBytes, "message")
	d.ReservedBytes = use(msg.ReservedBytes, "message")
	if s.CUDAValid {
		if d.AllocatedBytes < 0 {
			d.AllocatedBytes = use(s.CUDA.AllocatedBytes, "allocator")
		}
		if d.ReservedBytes < 0 {
			d.ReservedBytes = use(s.CUDA.ReservedBytes, "allocator")
		}
		d.LargestFreeBlock = use(s.CUDA.LargestFreeBlock, "allocator snapshot")
		d.InactiveSplitBytes = use(s.CUDA.InactiveSplitBytes, "allocator")
	}
	if d.AllocatedBytes >= 0 && d.ReservedBytes >= 0 {
		d.CacheFreeBytes = d.ReservedBytes - d.AllocatedBytes
	}
	// Device figures.
	total, fw := msg.TotalBytes, int64(0)
	if total >= 0 {
		basis["message"] = true
	} else if s.NVMLValid {
		total = use(s.Device.TotalBytes, "nvml")
	}
	if s.NVMLValid && s.Device.Version == 2 {
		fw = s.Device.ReservedBytes
	}
	if total >= 0 {
		d.LimitBytes = total - fw
	}
	if msg.AllowedBytes >= 0 && (d.LimitBytes < 0 || msg.AllowedBytes < d.LimitBytes) {
		d.LimitBytes = use(msg.AllowedBytes, "message")
	}
	d.DeviceFree = msg.FreeBytes
	if d.DeviceFree < 0 && s.NVMLValid {
		d.DeviceFree = use(s.Device.FreeBytes, "nvml")
	}
	// This process's total and the others.
	procInUse := msg.ProcessInUseBytes
	var msgOthers []GPUProcess
	for _, p := range msg.Processes {
		if p.PID == pid {
			procInUse = p.UsedBytes
		} else {
			msgOthers = append(msgOthers, p)
		}
	}
	if procInUse < 0 && s.ProcessGPUValid {
		procInUse = use(s.ProcessGPUBytes, "nvml")
	}
	if procInUse >= 0 && d.ReservedBytes >= 0 {
		d.OverheadBytes = max(procInUse-d.ReservedBytes, 0)
	}
	switch {
	case len(msgOthers) > 0:
		d.Others = msgOthers
	case s.NVMLValid:
		d.Others = slices.Clone(s.OtherProcesses)
		basis["nvml"] = true
	}
	if d.Others != nil || s.NVMLValid {
		d.OthersBytes = 0
		for _, o := range d.Others {
			if o.UsedKnown {
				d.OthersBytes += o.UsedBytes
			}
		}
	}
	slices.SortFunc(d.Others, func(a, b GPUProcess) int { return cmp.Compare(b.UsedBytes, a.UsedBytes) })

	R, A, L := d.RequestedBytes, d.AllocatedBytes, d.LimitBytes
	overhead := max(d.OverheadBytes, 0)
	// Memory used on the device outside this allocator when neither NVML
	// nor the message tells whose it is: total − free − reserved.
	outside := int64(-1)
	if d.OthersBytes < 0 && d.OverheadBytes < 0 && total >= 0 && d.DeviceFree >= 0 && d.ReservedBytes >= 0 {
		outside = max(total-fw-d.DeviceFree-d.ReservedBytes, 0)
	}
	// Each cause is a factor that, removed alone, would have let the
	// allocation succeed; the largest such factor is the cause. None:
	// capacity.
	known := R >= 0 && A >= 0 && L >= 0
	var best Cause
	var bestAmount int64 = -1
	consider := func(c Cause, amount int64, ok bool) {
		if ok && amount > bestAmount {
			best, bestAmount = c, amount
		}
	}
	consider(CauseFragmentation, d.CacheFreeBytes, R >= 0 && d.CacheFreeBytes >= R)
	consider(CauseCoTenant, d.OthersBytes, known && d.OthersBytes > 0 && A+R+overhead <= L)
	consider(CauseCoTenant, outside, known && outside >= overheadLarge && A+R+typicalOverhead <= L)
	consider(CauseOverhead, d.OverheadBytes-typicalOverhead, known && d.OverheadBytes >= overheadLarge &&
		A+R+typicalOverhead+max(d.OthersBytes, 0) <= L)
	d.Cause = best
	switch {
	case best == CauseFragmentation:
		d.Reason = fmt.Sprintf("the cache held %s free (reserved %s − allocated %s), enough for the %s request, but no free block was large enough",
			fmtSize(d.CacheFreeBytes), fmtSize(d.ReservedBytes), fmtSize(A), fmtSize(R))
		if d.LargestFreeBlock >= 0 {
			d.Reason += fmt.Sprintf(" (largest free block now %s)", fmtSize(d.LargestFreeBlock))
		}
		if d.InactiveSplitBytes > 0 {
			d.Reason += fmt.Sprintf("; %s sits in unusable split blocks", fmtSize(d.InactiveSplitBytes))
		}
	case best == CauseCoTenant && bestAmount == d.OthersBytes:
		d.Reason = fmt.Sprintf("other processes hold %s (%s); without them allocated %s + request %s + overhead %s = %s would fit in %s",
			fmtSize(d.OthersBytes), processList(d.Others, 3), fmtSize(A), fmtSize(R), fmtSize(overhead), fmtSize(A+R+overhead), fmtSize(L))
	case best == CauseCoTenant:
		d.OthersBytes = -1
		d.Reason = fmt.Sprintf("%s of the device is used outside this allocator (total %s − free %s − reserved %s): other processes, "+
			"or this process's CUDA context and libraries (no NVML to tell); without it allocated %s + request %s would fit in %s",
			fmtSize(outside), fmtSize(total), fmtSize(d.DeviceFree), fmtSize(d.ReservedBytes), fmtSize(A), fmtSize(R), fmtSize(L))
	case best == CauseOverhead:
		d.Reason = fmt.Sprintf("this process holds %s outside the caching allocator (NVML usage − reserved: CUDA context, cuBLAS/cuDNN workspaces); "+
			"with a typical %s the request would fit", fmtSize(d.OverheadBytes), fmtSize(typicalOverhead))
	default:
		d.Cause = CauseCapacity
		switch {
		case known:
			d.Reason = fmt.Sprintf("allocated %s + request %s = %s exceeds the %s the allocator can reach even with a perfectly packed cache",
				fmtSize(A), fmtSize(R), fmtSize(A+R), fmtSize(L))
			if overhead > 0 || d.OthersBytes > 0 {
				d.Reason += fmt.Sprintf(" (%s more outside it, %s in other processes)", fmtSize(overhead), fmtSize(max(d.OthersBytes, 0)))
			}
		case R >= 0 && A >= 0:
			d.Reason = fmt.Sprintf("allocated %s + request %s did not fit (device total unknown: no NVML and no figures in the message)",
				fmtSize(A), fmtSize(R))
		default:
			d.Reason = "the message gives no request size and the statistics show no spare cache: treated as a capacity shortage"
		}
	}
	return d
}

func hostReason(msg OOMMessage, s *Sample) string {
	var b strings.Builder
	b.WriteString("host memory: ")
	switch {
	case msg.CPULimitBytes >= 0 && msg.RequestedBytes >= 0:
		fmt.Fprintf(&b, "the CPU allocator could not add %s to %s in use under its %s limit", fmtSize(msg.RequestedBytes),
			fmtSize(max(msg.CPUInUseBytes, 0)), fmtSize(msg.CPULimitBytes))
	case msg.RequestedBytes >= 0:
		fmt.Fprintf(&b, "the CPU allocator could not allocate %s", fmtSize(msg.RequestedBytes))
	default:
		b.WriteString("an allocation failed on the host")
	}
	if s.RSSValid {
		fmt.Fprintf(&b, "; RSS %s", fmtSize(s.RSSBytes))
		switch {
		case s.CgroupLimited:
			fmt.Fprintf(&b, " of a %s cgroup limit", fmtSize(s.CgroupLimitBytes))
		case s.SysValid:
			fmt.Fprintf(&b, ", %s of %s host memory available", fmtSize(s.SysAvailableBytes), fmtSize(s.SysTotalBytes))
		}
	}
	if s.CPUAllocValid {
		fmt.Fprintf(&b, "; after unwinding, %s in %d live tensors", fmtSize(s.CPUTensorBytes), s.LiveTensors)
	}
	return b.String()
}

func processList(ps []GPUProcess, n int) string {
	var parts []string
	for i, p := range ps {
		if i == n {
			parts = append(parts, fmt.Sprintf("and %d more", len(ps)-n))
			break
		}
		if p.UsedKnown {
			parts = append(parts, fmt.Sprintf("PID %d %s", p.PID, fmtSize(p.UsedBytes)))
		} else {
			parts = append(parts, fmt.Sprintf("PID %d", p.PID))
		}
	}
	return strings.Join(parts, ", ")
}
