package monitor

import (
	"regexp"
	"strconv"
	"strings"
)

// OOMMessage is what ParseOOMMessage could read from an out-of-memory
// message. Byte fields are -1 when the message does not state them.
type OOMMessage struct {
	// Shape names the message family: "cuda-1.13" (libtorch ≤ 2.0),
	// "cuda-2.x" (2.1 and later), "cuda-generic" ("Tried to allocate"
	// without the known details), "cuda-error" (a CUDA call failed with
	// out of memory), "cuda-library" (cuBLAS/cuDNN allocation failure),
	// "cpu-limit" (cgotorch's CPU allocation limit), "cpu" (libtorch's
	// CPU allocator) or "unknown".
	Shape string `json:"shape"`
	// Device is "cuda", "cpu" or "" (unknown).
	Device string `json:"device"`
	// GPU is the device index in the message, -1 if absent.
	GPU int `json:"gpu"`
	// RequestedBytes is the size of the failed allocation.
	RequestedBytes int64 `json:"requested_bytes"`
	// TotalBytes and FreeBytes are the device's capacity and free memory at
	// the failure (the CUDA driver's view).
	TotalBytes int64 `json:"total_bytes"`
	FreeBytes  int64 `json:"free_bytes"`
	// AllocatedBytes is the memory allocated by the caching allocator;
	// ReservedBytes all it reserved (1.13 states it; for 2.x it is allocated
	// + private pools + reserved-but-unallocated).
	AllocatedBytes int64 `json:"allocated_bytes"`
	ReservedBytes  int64 `json:"reserved_bytes"`
	// ReservedUnallocatedBytes is 2.x's "reserved by PyTorch but unallocated".
	ReservedUnallocatedBytes int64 `json:"reserved_unallocated_bytes"`
	// PrivatePoolBytes is 2.x's "allocated in private pools" (CUDA Graphs).
	PrivatePoolBytes int64 `json:"private_pool_bytes"`
	// AllowedBytes is the per-process cap set by a memory fraction.
	AllowedBytes int64 `json:"allowed_bytes"`
	// ProcessInUseBytes is 2.x's "this process has X memory in use"
	// (including non-PyTorch memory).
	ProcessInUseBytes int64 `json:"process_in_use_bytes"`
	// Processes are 2.x's "Process <pid> has X memory in use" entries.
	Processes []GPUProcess `json:"processes,omitempty"`
	// CPUInUseBytes and CPULimitBytes come from cgotorch's CPU limit message.
	CPUInUseBytes int64 `json:"cpu_in_use_bytes"`
	CPULimitBytes int64 `json:"cpu_limit_bytes"`
}

const sizeRE = `(\d+(?:\.\d+)?) (bytes|KiB|MiB|GiB|TiB)`

var (
	reRequested      = regexp.MustCompile(`(?i)tried to allocate ` + sizeRE)
	reRequestedBytes = regexp.MustCompile(`(?i)tried to allocate (\d+) bytes`)
	reGPU113         = regexp.MustCompile(`\(GPU (\d+);`)
	reGPU2           = regexp.MustCompile(`GPU (\d+) has a total capac`)
	reTotal113       = regexp.MustCompile(sizeRE + ` total capacity`)
	reTotal2         = regexp.MustCompile(`total capaci?ty of ` + sizeRE)
	reFree113        = regexp.MustCompile(sizeRE + ` free;`)
	reFree2          = regexp.MustCompile(`of which ` + sizeRE + ` is free`)
	reAlloc113       = regexp.MustCompile(sizeRE + ` already allocated`)
	reAlloc2         = regexp.MustCompile(`Of the allocated memory ` + sizeRE + ` is allocated by PyTorch`)
	reReserved113    = regexp.MustCompile(sizeRE + ` reserved in total by PyTorch`)
	reReservedUnal   = regexp.MustCompile(sizeRE + ` is reserved by PyTorch but unallocated`)
	rePrivate        = regexp.MustCompile(`with ` + sizeRE + ` allocated in private pools`)
	reAllowed        = regexp.MustCompile(sizeRE + ` allowed;`)
	reThisProcess    = regexp.MustCompile(`this process has ` + sizeRE + ` memory in use`)
	reProcess        = regexp.MustCompile(`Process (\d+) has ` + sizeRE + ` memory in use`)
	reCPULimit       = regexp.MustCompile(`with (\d+) bytes in use and a limit of (\d+) bytes`)
)

// parseSize converts "36.00 MiB" (libtorch's format_size: bytes, KiB, MiB,
// GiB with two decimals) to bytes.
func parseSize(num, unit string) int64 {
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return -1
	}
	switch unit {
	case "KiB":
		v *= 1 << 10
	case "MiB":
		v *= 1 << 20
	case "GiB":
		v *= 1 << 30
	case "TiB":
		v *= 1 << 40
	}
	return int64(v + 0.5)
}

func findSize(re *regexp.Regexp, s string) int64 {
	m := re.FindStringSubmatch(s)
	if m == nil {
		return -1
	}
	return parseSize(m[len(m)-2], m[len(m)-1])
}

func firstKnown(vs ...int64) int64 {
	for _, v := range vs {
		if v >= 0 {
			return v
		}
	}
	return -1
}

// ParseOOMMessage reads the figures out of a libtorch out-of-memory
// message in the shapes of memory.md S6 (1.13–2.0, 2.1+, the newer
// device-generic "Out of memory. Tried to allocate", CUDA and library
// errors) and cgotorch's CPU allocator messages. Fields it cannot find are
// -1; it never fails.
func ParseOOMMessage(msg string) OOMMessage {
	p := OOMMessage{GPU: -1, RequestedBytes: -1, TotalBytes: -1, FreeBytes: -1, AllocatedBytes: -1, ReservedBytes: -1,
		ReservedUnallocatedBytes: -1, PrivatePoolBytes: -1, AllowedBytes: -1, ProcessInUseBytes: -1, CPUInUseBytes: -1, CPULimitBytes: -1}
	lower := strings.ToLower(msg)
	p.RequestedBytes = findSize(reRequested, msg)
	if p.RequestedBytes < 0 {
		if m := reRequestedBytes.FindStringSubmatch(msg); m != nil {
			p.RequestedBytes, _ = strconv.ParseInt(m[1], 10, 64)
		}
	}
	switch {
	case strings.Contains(msg, "cgotorch allocation limit"):
		p.Shape, p.Device = "cpu-limit", "cpu"
		if m := reCPULimit.FindStringSubmatch(msg); m != nil {
			p.CPUInUseBytes, _ = strconv.ParseInt(m[1], 10, 64)
			p.CPULimitBytes, _ = strconv.ParseInt(m[2], 10, 64)
		}
		return p
	case strings.Contains(msg, "DefaultCPUAllocator") || strings.HasPrefix(lower, "cpu out of memory"):
		p.Shape, p.Device = "cpu", "cpu"
		return p
	}
	if m := reGPU113.FindStringSubmatch(msg); m != nil {
		p.GPU, _ = strconv.Atoi(m[1])
	} else if m := reGPU2.FindStringSubmatch(msg); m != nil {
		p.GPU, _ = strconv.Atoi(m[1])
	}
	p.TotalBytes = firstKnown(findSize(reTotal113, msg), findSize(reTotal2, msg))
	p.FreeBytes = firstKnown(findSize(reFree2, msg), findSize(reFree113, msg))
	p.AllocatedBytes = firstKnown(findSize(reAlloc113, msg), findSize(reAlloc2, msg))
	p.AllowedBytes = findSize(reAllowed, msg)
	p.ProcessInUseBytes = findSize(reThisProcess, msg)
	p.PrivatePoolBytes = findSize(rePrivate, msg)
	for _, m := range reProcess.FindAllStringSubmatch(msg, -1) {
		pid, _ := strconv.Atoi(m[1])
		p.Processes = append(p.Processes, GPUProcess{PID: pid, UsedBytes: parseSize(m[2], m[3]), UsedKnown: true})
	}
	if r := findSize(reReserved113, msg); r >= 0 {
		p.Shape, p.ReservedBytes = "cuda-1.13", r
	} else if u := findSize(reReservedUnal, msg); u >= 0 {
		p.Shape, p.ReservedUnallocatedBytes = "cuda-2.x", u
		if p.AllocatedBytes >= 0 {
			p.ReservedBytes = p.AllocatedBytes + u + max(p.PrivatePoolBytes, 0)
		}
	}
	switch {
	case p.Shape != "":
	case p.RequestedBytes >= 0:
		p.Shape = "cuda-generic"
	case strings.Contains(msg, "CUBLAS_STATUS_ALLOC_FAILED") || strings.Contains(msg, "CUDNN_STATUS_ALLOC_FAILED") ||
		strings.Contains(msg, "CUDNN_STATUS_NOT_SUPPORTED"):
		p.Shape = "cuda-library"
	case strings.Contains(lower, "cuda error: out of memory") || strings.Contains(lower, "cudaerrormemoryallocation") ||
		strings.Contains(lower, "(out of memory)"):
		p.Shape = "cuda-error"
	default:
		p.Shape = "unknown"
		return p
	}
	p.Device = "cuda"
	return p
}

// FirstSentence is the message's first sentence without its final period,
// as the U5 line prints it: "CUDA out of memory. Tried to allocate …" gives
// "CUDA out of memory". A sentence ends at ". " or a line break; decimal
// points ("20.00 MiB") do not end one.
func FirstSentence(msg string) string {
	s := strings.TrimSpace(msg)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if i := strings.Index(s, ". "); i >= 0 {
		s = s[:i]
	}
	s = strings.TrimSpace(s)
	return strings.TrimSuffix(s, ".")
}
