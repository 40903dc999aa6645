package cgotorch

/*
#include <stdlib.h>
#include "cgotorch.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"time"
	"unsafe"
)

// Distributed errors. A failed store or collective call returns an *Error
// whose Code is CodeDist or CodeDistTimeout; errors.Is(err, ErrDistributed)
// matches both, errors.Is(err, ErrDistTimeout) only the timeout.
var (
	ErrDistributed = errors.New("cgotorch: distributed operation failed")
	ErrDistTimeout = errors.New("cgotorch: distributed operation timed out")
)

// Codes of distributed failures (CGT_ERR_DIST, CGT_ERR_DIST_TIMEOUT).
const (
	// CodeDist: a peer closed its connection, or the store or network failed.
	CodeDist Code = C.CGT_ERR_DIST
	// CodeDistTimeout: a store or collective operation exceeded its timeout.
	CodeDistTimeout Code = C.CGT_ERR_DIST_TIMEOUT
)

// LiveDistHandles is the number of live Store and ProcessGroup handles
// (created and not closed), counted on the C side for leak tests.
func LiveDistHandles() int64 { return int64(C.cgt_dist_live_handles()) }

// TCPStoreConfig describes a c10d TCPStore: a key-value server one process
// hosts (Server) and every process of a job connects to, used to rendezvous
// process groups.
type TCPStoreConfig struct {
	// Host is the server's address; Port its TCP port (0 with Server: a
	// free port, read back with Port).
	Host string
	Port int
	// Server hosts the store in this process.
	Server bool
	// WorldSize is the number of processes that will connect (the server
	// included). With WaitWorkers, set on every process, each registers
	// itself and the server's constructor returns once all WorldSize have
	// (after Timeout it returns anyway, and the rendezvous that follows
	// fails). A client that does not register makes the server wait its
	// whole timeout.
	WorldSize   int
	WaitWorkers bool
	// Timeout bounds connecting and every get/wait.
	Timeout time.Duration
	// Prefix, if not empty, scopes every key (c10d.PrefixStore), e.g. the
	// "/worker/attempt_N" torchrun's agent-hosted store expects.
	Prefix string
}

// Store is a handle to a c10d store. Close it when done (idempotent); a
// ProcessGroup keeps what it needs of it alive on its own.
type Store struct {
	h unsafe.Pointer // C.cgt_store; swapped to nil by Close
}

// NewTCPStore connects to (or, with cfg.Server, starts) a TCPStore.
//
// A client first waits, up to cfg.Timeout, until the server accepts
// connections. libtorch 1.13's client retries connect() in a loop, and when
// it starts before the server (launchers start all ranks at once) a retry
// can pick the server's port as its own ephemeral port on the same host:
// Linux then connects the socket to itself (TCP simultaneous open), the
// client talks to itself and the rendezvous times out. Go's dialer detects
// and retries such self-connections, so once it gets through, the server is
// listening and the port can no longer be taken.
func NewTCPStore(cfg TCPStoreConfig) (*Store, error) {
	if cfg.Timeout <= 0 {
		return nil, misuse("tcp_store_new", "timeout must be positive")
	}
	if !cfg.Server {
		if err := waitListening(cfg.Host, cfg.Port, cfg.Timeout); err != nil {
			return nil, err
		}
	}
	host := C.CString(cfg.Host)
	defer C.free(unsafe.Pointer(host))
	var prefix *C.char
	if cfg.Prefix != "" {
		prefix = C.CString(cfg.Prefix)
		defer C.free(unsafe.Pointer(prefix))
	}
	o := C.cgt_tcp_store_options{
		host: host, port: C.int32_t(cfg.Port), is_server: cbool(cfg.Server), world_size: C.int32_t(cfg.WorldSize),
		wait_workers: cbool(cfg.WaitWorkers), timeout_ms: C.int64_t(cfg.Timeout.Milliseconds()), prefix: prefix,
	}
	var h C.cgt_store
	if err := check("tcp_store_new", C.cgt_tcp_store_new(o, &h)); err != nil {
		return nil, err
	}
	return &Store{h: unsafe.Pointer(h)}, nil
}

// waitListening dials host:port until a connection succeeds or timeout.
func waitListening(host string, port int, timeout time.Duration) error {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		c, err := net.DialTimeout("tcp", addr, min(left, 5*time.Second))
		if err == nil {
			return c.Close()
		}
		if time.Now().Add(100 * time.Millisecond).After(deadline) {
			return &Error{Code: CodeDistTimeout, Op: "tcp_store_new",
				Msg: fmt.Sprintf("no store server answered at %s within %v: %v", addr, timeout, err)}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *Store) ptr(op string) (C.cgt_store, error) {
	if s == nil {
		return nil, misuse(op, "use of a nil store")
	}
	p := C.cgt_store(atomic.LoadPointer(&s.h))
	if p == nil {
		return nil, misuse(op, "use of a closed store")
	}
	return p, nil
}

// Close releases the store handle (a server stops once no process group
// uses it any more). Idempotent and nil-safe.
func (s *Store) Close() {
	if s == nil {
		return
	}
	if p := atomic.SwapPointer(&s.h, nil); p != nil {
		C.cgt_store_free(C.cgt_store(p))
	}
}

// Port is the store's TCP port (the one picked for a server started on port 0).
func (s *Store) Port() (int, error) {
	p, err := s.ptr("store_port")
	if err != nil {
		return 0, err
	}
	var port C.int32_t
	if err := check("store_port", C.cgt_store_port(p, &port)); err != nil {
		return 0, err
	}
	return int(port), nil
}

// Set stores value under key.
func (s *Store) Set(key string, value []byte) error {
	p, err := s.ptr("store_set")
	if err != nil {
		return err
	}
	k := C.CString(key)
	defer C.free(unsafe.Pointer(k))
	var vp unsafe.Pointer
	if len(value) > 0 {
		vp = C.CBytes(value)
		defer C.free(vp)
	}
	return check("store_set", C.cgt_store_set(p, k, vp, C.int64_t(len(value))))
}

// Get returns key's value, waiting for it to be set (up to the store's timeout).
func (s *Store) Get(key string) ([]byte, error) {
	p, err := s.ptr("store_get")
	if err != nil {
		return nil, err
	}
	k := C.CString(key)
	defer C.free(unsafe.Pointer(k))
	var v unsafe.Pointer
	var n C.int64_t
	if err := check("store_get", C.cgt_store_get(p, k, &v, &n)); err != nil {
		return nil, err
	}
	defer C.cgt_free(v)
	return C.GoBytes(v, C.int(n)), nil
}

// Add atomically adds delta to the counter key and returns its new value.
func (s *Store) Add(key string, delta int64) (int64, error) {
	p, err := s.ptr("store_add")
	if err != nil {
		return 0, err
	}
	k := C.CString(key)
	defer C.free(unsafe.Pointer(k))
	var out C.int64_t
	if err := check("store_add", C.cgt_store_add(p, k, C.int64_t(delta), &out)); err != nil {
		return 0, err
	}
	return int64(out), nil
}

// Backend is a c10d communication backend.
type Backend int32

// Backends: Gloo moves CPU tensors over TCP; NCCL moves CUDA tensors over
// NVLink, PCIe or the network (CUDA flavour only).
const (
	Gloo Backend = C.CGT_BACKEND_GLOO
	NCCL Backend = C.CGT_BACKEND_NCCL
)

func (b Backend) String() string {
	switch b {
	case Gloo:
		return "gloo"
	case NCCL:
		return "nccl"
	}
	return fmt.Sprintf("backend(%d)", int32(b))
}

// Available reports whether this build of libcgotorch can create b.
func (b Backend) Available() bool { return C.cgt_dist_backend_available(C.int32_t(b)) != 0 }

// DistOp is the reduction of ProcessGroup.AllReduce.
type DistOp int32

// Reductions: the sum over ranks, or the sum divided by the number of ranks.
const (
	DistSum DistOp = C.CGT_REDUCE_SUM
	DistAvg DistOp = C.CGT_REDUCE_AVG
)

// ProcessGroupConfig describes this process's place in a group.
type ProcessGroupConfig struct {
	Backend Backend
	// Rank is this process's index in [0, Size).
	Rank, Size int
	// Timeout bounds the rendezvous and every collective: a peer that died
	// or stopped answering ends the call with ErrDistributed or
	// ErrDistTimeout, never a hang.
	Timeout time.Duration
	// Device is where the group's tensors live: CPU for Gloo, a CUDA
	// device for NCCL.
	Device Device
	// Interface, for Gloo, names the network interface to use (as
	// GLOO_SOCKET_IFNAME does); empty: the address this host's name
	// resolves to (loopback if it does not resolve).
	Interface string
}

// ProcessGroup is a handle to a c10d process group. Collectives must be
// called by every rank in the same order. Close it when done (idempotent).
// After a distributed error the group is unusable.
type ProcessGroup struct {
	h          unsafe.Pointer // C.cgt_process_group
	rank, size int
	dev        Device
	backend    Backend
}

// NewProcessGroup joins a process group through store s: it returns once
// all cfg.Size ranks have connected, or fails after cfg.Timeout. For NCCL it
// sets TORCH_NCCL_BLOCKING_WAIT=1 unless the environment says otherwise, so
// that NCCL failures and timeouts come back as errors from the collective
// instead of aborting the process from libtorch's watchdog thread.
func NewProcessGroup(s *Store, cfg ProcessGroupConfig) (*ProcessGroup, error) {
	sp, err := s.ptr("process_group_new")
	if err != nil {
		return nil, err
	}
	if cfg.Timeout <= 0 {
		return nil, misuse("process_group_new", "timeout must be positive")
	}
	if cfg.Backend == NCCL {
		if _, set := os.LookupEnv("TORCH_NCCL_BLOCKING_WAIT"); !set {
			if _, old := os.LookupEnv("NCCL_BLOCKING_WAIT"); !old {
				if err := os.Setenv("TORCH_NCCL_BLOCKING_WAIT", "1"); err != nil {
					return nil, err
				}
			}
		}
	}
	var iface *C.char
	if cfg.Interface != "" {
		iface = C.CString(cfg.Interface)
		defer C.free(unsafe.Pointer(iface))
	}
	o := C.cgt_process_group_options{
		backend: C.int32_t(cfg.Backend), rank: C.int32_t(cfg.Rank), size: C.int32_t(cfg.Size),
		timeout_ms: C.int64_t(cfg.Timeout.Milliseconds()), device: cfg.Device.c(), iface: iface,
	}
	var h C.cgt_process_group
	if err := check("process_group_new", C.cgt_process_group_new(sp, o, &h)); err != nil {
		return nil, err
	}
	return &ProcessGroup{h: unsafe.Pointer(h), rank: cfg.Rank, size: cfg.Size, dev: cfg.Device, backend: cfg.Backend}, nil
}

func (g *ProcessGroup) ptr(op string) (C.cgt_process_group, error) {
	if g == nil {
		return nil, misuse(op, "use of a nil process group")
	}
	p := C.cgt_process_group(atomic.LoadPointer(&g.h))
	if p == nil {
		return nil, misuse(op, "use of a closed process group")
	}
	return p, nil
}

// Close leaves the group and frees its handle. Idempotent and nil-safe.
func (g *ProcessGroup) Close() {
	if g == nil {
		return
	}
	if p := atomic.SwapPointer(&g.h, nil); p != nil {
		C.cgt_process_group_free(C.cgt_process_group(p))
	}
}

// Rank is this process's index in the group.
func (g *ProcessGroup) Rank() int { return g.rank }

// Size is the number of processes in the group.
func (g *ProcessGroup) Size() int { return g.size }

// Device is where the group's tensors live.
func (g *ProcessGroup) Device() Device { return g.dev }

// Backend is the group's communication backend.
func (g *ProcessGroup) Backend() Backend { return g.backend }

// AllReduce replaces t, on every rank, by the reduction over ranks of t (t
// contiguous, on the group's device).
func (g *ProcessGroup) AllReduce(t *Tensor, op DistOp) error {
	p, err := g.ptr("all_reduce")
	if err != nil {
		return err
	}
	var h C.cgt_tensor
	if err := Try(func() { h = t.handle("all_reduce") }); err != nil {
		return err
	}
	return check("all_reduce", C.cgt_all_reduce_(p, h, C.int32_t(op)))
}

// Broadcast replaces t on every rank by root's t.
func (g *ProcessGroup) Broadcast(t *Tensor, root int) error {
	p, err := g.ptr("broadcast")
	if err != nil {
		return err
	}
	var h C.cgt_tensor
	if err := Try(func() { h = t.handle("broadcast") }); err != nil {
		return err
	}
	return check("broadcast", C.cgt_broadcast_(p, h, C.int32_t(root)))
}

// Barrier returns once every rank has called it.
func (g *ProcessGroup) Barrier() error {
	p, err := g.ptr("barrier")
	if err != nil {
		return err
	}
	return check("barrier", C.cgt_barrier(p))
}

// AllReduceSumAutograd returns the sum over ranks of t as a new tensor (in
// t's scope) that autograd differentiates through: its backward sums the
// incoming gradients over ranks, so every rank must run that backward. Like
// tensor math it panics with *Error on failure (Try recovers it).
func (g *ProcessGroup) AllReduceSumAutograd(t *Tensor) *Tensor {
	p, err := g.ptr("all_reduce_sum_autograd")
	if err != nil {
		panic(err)
	}
	var out C.cgt_tensor
	must("all_reduce_sum_autograd", C.cgt_all_reduce_sum_autograd(p, t.handle("all_reduce_sum_autograd"), &out))
	return newTensor(out, t.scope)
}
