package cgotorch

/*
#cgo CFLAGS: -O2
#cgo LDFLAGS: -L${SRCDIR}/build/cpu -lcgotorch -Wl,--enable-new-dtags -Wl,-rpath,${SRCDIR}/build/cpu
#include <stdlib.h>
#include "cgotorch.h"
*/
import "C"

import (
	"fmt"
	"os"
	"strings"
	"unsafe"
)

// ABIVersion is the C ABI version this Go package was compiled against
// (CGT_ABI_VERSION in cgotorch.h).
const ABIVersion = int(C.CGT_ABI_VERSION)

// BuildInfo identifies the loaded libcgotorch.so.
type BuildInfo struct {
	// ABIVersion is the ABI version the loaded library was built with.
	ABIVersion int
	// TorchVersion is libtorch's TORCH_VERSION (Debian's 1.13.1 reports "1.13.0").
	TorchVersion string
	// CUDA reports whether the library is the CUDA flavour.
	CUDA bool
}

// Flavour is "cuda" or "cpu".
func (b BuildInfo) Flavour() string {
	if b.CUDA {
		return "cuda"
	}
	return "cpu"
}

// String formats the build identity for log headers.
func (b BuildInfo) String() string {
	return fmt.Sprintf("libcgotorch abi %d, libtorch %s, %s flavour", b.ABIVersion, b.TorchVersion, b.Flavour())
}

// Build reports the identity of the loaded library. It has no side effects.
func Build() BuildInfo {
	return BuildInfo{
		ABIVersion:   int(C.cgt_abi_version()),
		TorchVersion: C.GoString(C.cgt_torch_version()),
		CUDA:         C.cgt_built_with_cuda() != 0,
	}
}

// Config holds process-wide libtorch settings applied by Init.
type Config struct {
	// Threads is the intra-op thread count for libtorch and OpenBLAS. Zero
	// keeps libtorch's default (OMP_NUM_THREADS, else the core count).
	Threads int
	// AllocConf, if non-empty, is exported as PYTORCH_CUDA_ALLOC_CONF and
	// PYTORCH_ALLOC_CONF (AllocConfEnv: libtorch releases differ in which
	// they read first). The CUDA caching allocator parses it once, when it
	// first initialises, so Init must run before the first CUDA allocation.
	// An empty value leaves the environment untouched (a value exported by
	// the shell still applies).
	AllocConf string
	// UntrackedCPUAllocator keeps libtorch's own CPU allocator. By default Init
	// installs the byte-counting CPU allocator behind CPUAllocatorStats.
	UntrackedCPUAllocator bool
	// MallocMmapThreshold is glibc's M_MMAP_THRESHOLD for host tensor
	// memory: smaller allocations come from the heap and are reused instead
	// of being unmapped and page-faulted in again every step. Zero means
	// DefaultMallocMmapThreshold (the retained memory can be handed back
	// with MallocTrim); negative leaves glibc's dynamic default. The
	// MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ environment variables,
	// when set, take precedence.
	MallocMmapThreshold int64
}

// DefaultMallocMmapThreshold keeps allocations up to 256 MiB on the heap
// (every training tensor; a dense multi-GB matrix is still mmap'd and
// returned to the system when freed). Heap memory is trimmed above twice that.
const DefaultMallocMmapThreshold = 256 << 20

// Init checks that the loaded library matches this package's ABI, applies cfg,
// and returns the build identity. Call it once from main before any tensor
// work; libraries never call it.
func Init(cfg Config) (BuildInfo, error) {
	b := Build()
	if b.ABIVersion != ABIVersion {
		return b, fmt.Errorf("cgotorch: libcgotorch.so has ABI %d but this program expects %d: rebuild libcgotorch (make shim): %w",
			b.ABIVersion, ABIVersion, ErrInvalidArgument)
	}
	if cfg.AllocConf != "" {
		if err := exportAllocConf(cfg.AllocConf); err != nil {
			return b, err
		}
	}
	if !cfg.UntrackedCPUAllocator {
		C.cgt_cpu_alloc_install()
	}
	if t := cfg.MallocMmapThreshold; t >= 0 && os.Getenv("MALLOC_MMAP_THRESHOLD_") == "" && os.Getenv("MALLOC_TRIM_THRESHOLD_") == "" {
		if t == 0 {
			t = DefaultMallocMmapThreshold
		}
		C.cgt_malloc_tune(C.int64_t(t), C.int64_t(2*t))
	}
	if cfg.Threads > 0 {
		if err := SetNumThreads(cfg.Threads); err != nil {
			return b, err
		}
	}
	return b, nil
}

// SetNumThreads sets libtorch's intra-op thread count (applied to every OS
// thread that later enters libtorch) and OpenBLAS's, when OpenBLAS is loaded.
func SetNumThreads(n int) error {
	if n <= 0 {
		return &Error{Code: CodeInvalidArgument, Op: "set_num_threads", Msg: "thread count must be positive"}
	}
	return check("set_num_threads", C.cgt_set_num_threads(C.int32_t(n)))
}

// NumThreads is libtorch's intra-op thread count on the calling thread.
func NumThreads() int { return int(C.cgt_get_num_threads()) }

// ParallelInfo is libtorch's description of its parallel backends (at::get_parallel_info), plus OpenBLAS's.
func ParallelInfo() (string, error) {
	var p *C.char
	if err := check("parallel_info", C.cgt_parallel_info(&p)); err != nil {
		return "", err
	}
	defer C.cgt_free(unsafe.Pointer(p))
	return strings.TrimSpace(C.GoString(p)), nil
}

// LiveTensors is the number of tensor handles created and not yet freed,
// counted on the C side. Leak tests assert it returns to its baseline.
func LiveTensors() int64 { return int64(C.cgt_live_tensors()) }

// MallocTrim hands free heap memory back to the system (glibc
// malloc_trim(0)); it reports whether any was released. The memory monitor's
// cleanup calls it.
func MallocTrim() bool { return C.cgt_malloc_trim() != 0 }

// OpenBLASCore is the kernel family OpenBLAS selected for this CPU (e.g.
// "Haswell"), or "" when OpenBLAS is not the BLAS libtorch uses.
func OpenBLASCore() string { return C.GoString(C.cgt_openblas_corename()) }
