package dist

import (
	"errors"
	"fmt"
	"strings"
	"time"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// DefaultTimeout bounds the rendezvous and every collective (PyTorch's
// default process-group timeout). A rank waits at most this long for a slow
// peer (one writing a checkpoint, retrying after out-of-memory) before it
// gives up with ErrDistTimeout; a peer that exits is noticed at once.
const DefaultTimeout = 30 * time.Minute

// Config configures Join.
type Config struct {
	// Backend; zero: Gloo for a CPU device, NCCL for a CUDA one.
	Backend ct.Backend
	// Device holds the model and the tensors the group reduces.
	Device ct.Device
	// Timeout; zero: DefaultTimeout.
	Timeout time.Duration
}

// Comm is this process's membership of a data-parallel job: the store, the
// process group and the world. A nil *Comm is a single process. Close it
// when done.
type Comm struct {
	world World
	store *ct.Store
	pg    *ct.ProcessGroup
	xbuf  *ct.Tensor // Exchange's buffer (see Reserve)
}

// Join connects to the job w describes: rank 0 hosts the TCPStore (unless
// torchrun's agent does), every rank connects, and the process group is
// formed. It blocks until all w.Size ranks have joined or cfg.Timeout has
// passed. For a single-process world it returns nil and no error.
func Join(w World, cfg Config) (*Comm, error) {
	if !w.Distributed() {
		return nil, nil
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Backend == 0 {
		cfg.Backend = ct.Gloo
		if cfg.Device.IsCUDA() {
			cfg.Backend = ct.NCCL
		}
	}
	if !cfg.Backend.Available() {
		return nil, fmt.Errorf("dist: this libcgotorch (%s) has no %s backend: %w", ct.Build(), cfg.Backend, ct.ErrInvalidArgument)
	}
	sc := ct.TCPStoreConfig{Host: w.MasterAddr, Port: w.MasterPort, WorldSize: w.Size, WaitWorkers: true, Timeout: cfg.Timeout}
	if w.AgentStore {
		sc.Prefix = w.StorePrefix // as torch.distributed's env:// rendezvous does
	} else if w.Rank == 0 {
		sc.Server = true
	}
	store, err := ct.NewTCPStore(sc)
	if err != nil {
		return nil, fmt.Errorf("dist: rank %d: the store at %s:%d: %w", w.Rank, w.MasterAddr, w.MasterPort, err)
	}
	pg, err := ct.NewProcessGroup(store, ct.ProcessGroupConfig{
		Backend: cfg.Backend, Rank: w.Rank, Size: w.Size, Timeout: cfg.Timeout, Device: cfg.Device, Interface: w.Interface,
	})
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("dist: rank %d: joining the %s process group of %d: %w", w.Rank, cfg.Backend, w.Size, err)
	}
	return &Comm{world: w, store: store, pg: pg}, nil
}

// Close leaves the group. Idempotent and nil-safe.
func (c *Comm) Close() {
	if c == nil {
		return
	}
	c.pg.Close()
	c.store.Close()
	c.xbuf.Free()
	c.xbuf = nil
}

// Reserve allocates Exchange's buffer for payloads of up to n values now,
// so that the per-step agreement allocates nothing: a rank that has just
// run out of memory can still take part in it.
func (c *Comm) Reserve(n int64) error {
	need := int64(c.Size()) + n
	if c.xbuf != nil && c.xbuf.Numel() >= need {
		return nil
	}
	return ct.Try(func() {
		c.xbuf.Free()
		c.xbuf = ct.Zeros(ct.On(c.pg.Device()), need)
	})
}

// Rank is this process's rank (0 for a single process).
func (c *Comm) Rank() int {
	if c == nil {
		return 0
	}
	return c.world.Rank
}

// Size is the number of processes (1 for a single process).
func (c *Comm) Size() int {
	if c == nil {
		return 1
	}
	return c.world.Size
}

// IsRoot reports whether this process writes the job's files (rank 0).
func (c *Comm) IsRoot() bool { return c.Rank() == 0 }

// Backend is the process group's backend.
func (c *Comm) Backend() ct.Backend { return c.pg.Backend() }

// Shard returns this rank's rows [off, off+n) of a global batch of b rows:
// b/W consecutive rows, the same split on every rank. b must be divisible by
// W, so that each rank's share, and hence the step's arithmetic, does not
// depend on which rank gets the remainder.
func (c *Comm) Shard(b int) (off, n int64, err error) {
	w := c.Size()
	if b%w != 0 {
		return 0, 0, fmt.Errorf("dist: --batch_size %d is the global batch and must be divisible by the %d processes (e.g. %d or %d)",
			b, w, b/w*w, (b/w+1)*w)
	}
	n = int64(b / w)
	return int64(c.Rank()) * n, n, nil
}

// AllReduceSum sums t over the ranks, in place.
func (c *Comm) AllReduceSum(t *ct.Tensor) error { return c.pg.AllReduce(t, ct.DistSum) }

// Broadcast copies rank 0's t into every rank's t.
func (c *Comm) Broadcast(t *ct.Tensor) error { return c.pg.Broadcast(t, 0) }

// Barrier returns once every rank has called it.
func (c *Comm) Barrier() error { return c.pg.Barrier() }

// SumAutograd returns the sum over ranks of t, differentiably (see
// cgotorch.ProcessGroup.AllReduceSumAutograd). It panics with
// *cgotorch.Error on failure, like tensor math.
func (c *Comm) SumAutograd(t *ct.Tensor) *ct.Tensor { return c.pg.AllReduceSumAutograd(t) }

// Status is what a rank reports at a step's agreement.
type Status int

// Statuses, by increasing severity.
const (
	OK            Status = iota // the step's local part succeeded
	StopRequested               // Ctrl-C or SIGTERM reached this rank
	TimeUp                      // this rank's time limit (e.g. --max_minutes) has passed
	OutOfMemory                 // the local part failed for lack of memory
	Failed                      // the local part failed otherwise
)

// StatusOf classifies a step's local error.
func StatusOf(err error) Status {
	switch {
	case err == nil:
		return OK
	case errors.Is(err, ct.ErrOutOfMemory):
		return OutOfMemory
	}
	return Failed
}

// ErrPeerFailed is wrapped by a *PeerError.
var ErrPeerFailed = errors.New("dist: another rank failed")

// PeerError is returned on the ranks that did not fail when another rank's
// step failed: every rank stops at the same step.
type PeerError struct {
	Rank   int
	Status Status
}

func (e *PeerError) Error() string {
	if e.Status == OutOfMemory {
		return fmt.Sprintf("rank %d ran out of memory (its log has the report); every rank stopped", e.Rank)
	}
	return fmt.Sprintf("rank %d failed (its log says why); every rank stopped", e.Rank)
}

// Is makes errors.Is(err, ErrPeerFailed) hold. A peer's out-of-memory is
// deliberately not cgotorch.ErrOutOfMemory: this rank did not run out of
// memory, and its memory monitor must not report that it did.
func (e *PeerError) Is(target error) bool { return target == ErrPeerFailed }

// Agreement is the outcome of Exchange: every rank's status and the sum
// over ranks of the payloads.
type Agreement struct {
	Statuses []Status
	// Payload is the sum over ranks of the payloads ([n], nil for n = 0): a
	// view of the reserved buffer, its handle owned by the scope given to
	// Exchange.
	Payload *ct.Tensor
}

// StopRequested reports whether any rank asked to stop.
func (a Agreement) StopRequested() bool { return a.any(StopRequested) }

// TimeUp reports whether any rank's time limit has passed.
func (a Agreement) TimeUp() bool { return a.any(TimeUp) }

func (a Agreement) any(st Status) bool {
	for _, s := range a.Statuses {
		if s == st {
			return true
		}
	}
	return false
}

// Failed returns the lowest rank whose step failed and its status (ok
// false if none did).
func (a Agreement) Failed() (rank int, st Status, ok bool) {
	for r, s := range a.Statuses {
		if s >= OutOfMemory {
			return r, s, true
		}
	}
	return 0, OK, false
}

// Exchange is the per-step agreement: one all-reduce of W status slots
// followed by a payload of n float32 values (payload, n elements on the
// group's device; nil for zeros, e.g. after a local failure), and one host
// read of the W slots. n must be the same on every rank. It works in the
// buffer Reserve allocates; the returned Payload ([n]) is a view of it,
// valid until the next Exchange. Every rank must call it once per step, also
// after a local failure (with that status and a nil or zero payload), so
// that all ranks see the same statuses and take the same decision. A rank
// contributes its payload where it has data and zeros elsewhere; the sum
// then gathers every rank's part exactly (x + 0 = x).
func (c *Comm) Exchange(s *ct.Scope, st Status, payload *ct.Tensor, n int64) (Agreement, error) {
	w := int64(c.Size())
	var ag Agreement
	var buf *ct.Tensor
	if err := c.Reserve(n); err != nil {
		return ag, err
	}
	err := ct.Try(func() {
		// Views of the reserved buffer: no tensor memory is allocated.
		buf = s.Adopt(c.xbuf.Narrow(0, 0, w+n)).Zero_()
		s.Adopt(buf.Narrow(0, int64(c.Rank()), 1)).Fill_(float64(st))
		if payload != nil {
			ct.NoGrad(func() { s.Adopt(buf.Narrow(0, w, n)).Copy_(payload.Reshape(n)) })
		}
	})
	if err != nil {
		return ag, err
	}
	if err := c.AllReduceSum(buf); err != nil {
		return ag, err
	}
	err = ct.Try(func() {
		for _, v := range s.Adopt(buf.Narrow(0, 0, w)).Float32s() {
			ag.Statuses = append(ag.Statuses, Status(v))
		}
		if n > 0 {
			ag.Payload = s.Adopt(buf.Narrow(0, w, n))
		}
	})
	return ag, err
}

// Store keys of a failure report (Abort, Explain).
const (
	failureKey   = "gotorch/failure"
	failureCount = "gotorch/failures"
)

// Abort is for a rank whose step failed where its peers wait inside a
// collective of that step (e.g. a BatchNorm all-reduce in the forward
// pass), so that no agreement is possible: it publishes the cause in the
// store (best effort) and leaves the process group, which makes the
// peers' pending collective fail at once instead of at the timeout. The
// Comm is unusable afterwards (Close it).
func (c *Comm) Abort(cause error) {
	if c == nil {
		return
	}
	msg := fmt.Sprintf("%d|%d|%v", c.Rank(), StatusOf(cause), cause)
	if c.store.Set(failureKey, []byte(msg)) == nil {
		_, _ = c.store.Add(failureCount, 1)
	}
	c.pg.Close()
}

// Explain adds what a peer published with Abort to a distributed error
// (best effort: the store may be gone with rank 0). The result matches
// ErrPeerFailed when the cause is known, and still wraps err.
func (c *Comm) Explain(err error) error {
	if c == nil || !errors.Is(err, ct.ErrDistributed) {
		return err
	}
	if n, aerr := c.store.Add(failureCount, 0); aerr != nil || n == 0 {
		return fmt.Errorf("lost contact with the other processes (one exited or the network failed; see their logs): %w", err)
	}
	v, gerr := c.store.Get(failureKey)
	if gerr != nil {
		return err
	}
	var rank, st int
	var msg string
	if _, serr := fmt.Sscanf(string(v), "%d|%d|", &rank, &st); serr != nil {
		return err
	}
	if parts := strings.SplitN(string(v), "|", 3); len(parts) == 3 {
		msg = parts[2]
	}
	return fmt.Errorf("%w: %s (%w)", &PeerError{Rank: rank, Status: Status(st)}, msg, err)
}
