package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/scdiffusion/gotorch-train/cellunet/dist"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// Data-parallel runs of train, train-ae and train-classifier, and sample
// across processes: the launcher (torchrun, a PyTorchJob, srun) starts one
// process per device with RANK/WORLD_SIZE/... in the environment; each
// process runs the same command line.

func distFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "dist_timeout", Value: int(dist.DefaultTimeout / time.Second),
			Usage:    "data-parallel runs (torchrun, srun, PyTorchJob): `SECONDS` a process waits for the others, at start-up and in every step, before it fails",
			EnvVars:  env("dist_timeout"),
			Category: catSystem,
			Action:   intBetween("dist_timeout", 1, 7*24*3600)}, // at most a week
	}
}

// distRun is the data-parallel side of a training command.
type distRun struct {
	world   dist.World
	timeout time.Duration
}

// newDistRun reads the launcher's environment and checks that the global
// batch splits evenly (batchSize 0: the command splits no batch, as
// sample), before anything is written; with --device cuda each process of
// a one-process-per-GPU job takes its LOCAL_RANK's GPU.
func newDistRun(c *cli.Context, batchSize int) (*distRun, error) {
	w, err := dist.FromEnv(os.Getenv)
	if err != nil {
		return nil, usageError{err}
	}
	d := &distRun{world: w, timeout: time.Duration(c.Int("dist_timeout")) * time.Second}
	if !w.Distributed() {
		return d, nil
	}
	if batchSize != 0 && (batchSize < 0 || batchSize%w.Size != 0) {
		return nil, usagef("--batch_size %d is the global batch of all %d processes and must be divisible by %d (e.g. %d or %d)",
			batchSize, w.Size, w.Size, max(w.Size, batchSize/w.Size*w.Size), (batchSize/w.Size+1)*w.Size)
	}
	// One process per GPU: --device cuda is this process's GPU, LOCAL_RANK
	// among the visible ones (modulo their number, so a launcher that shows
	// each process only its own GPU, as srun --gpus-per-task=1 does, works).
	if c.String("device") == "cuda" {
		idx := w.LocalRank
		if n := ct.CUDADeviceCount(); n > 0 {
			idx %= n
		}
		if err := c.Set("device", fmt.Sprintf("cuda:%d", idx)); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// root reports whether this process writes the run's files and log (rank 0).
func (d *distRun) root() bool { return d.world.Rank == 0 }

// logOut is where the training log goes: rank 0's output; other ranks print
// only their memory lines and errors.
func (d *distRun) logOut(w io.Writer) io.Writer {
	if d.root() {
		return w
	}
	return io.Discard
}

// memWriter is where the memory monitor's lines go: the log on rank 0, the
// raw output on the other ranks, each line led by the rank in a
// data-parallel run.
func (d *distRun) memWriter(log, raw io.Writer) io.Writer {
	if !d.world.Distributed() {
		return log
	}
	w := log
	if !d.root() {
		w = raw
	}
	return &linePrefixer{w: w, prefix: []byte(fmt.Sprintf("[rank %d] ", d.world.Rank)), start: true}
}

// join forms the process group (a no-op for a single process).
func (d *distRun) join(out io.Writer, dev ct.Device, batchSize int) (*dist.Comm, error) {
	if !d.world.Distributed() {
		return nil, nil
	}
	comm, err := dist.Join(d.world, dist.Config{Device: dev, Timeout: d.timeout})
	if err != nil {
		if errors.Is(err, ct.ErrInvalidArgument) || errors.Is(err, ct.ErrNoCUDA) {
			return nil, err
		}
		return nil, fmt.Errorf("%w (is every process started, and MASTER_ADDR reachable? --dist_timeout is %v)", err, d.timeout)
	}
	if batchSize == 0 {
		fmt.Fprintf(out, "data-parallel: %s, %s backend; each output's batches go to the processes in turn\n", d.world, comm.Backend())
	} else {
		fmt.Fprintf(out, "data-parallel: %s, %s backend; --batch_size %d is the global batch, %d rows per process\n",
			d.world, comm.Backend(), batchSize, batchSize/d.world.Size)
	}
	return comm, nil
}

// result labels a data-parallel rank's error with its rank; a peer's
// out-of-memory ends this rank with the out-of-memory exit status too.
func (d *distRun) result(err error) error {
	if err == nil || !d.world.Distributed() {
		return err
	}
	var pe *dist.PeerError
	if errors.As(err, &pe) && pe.Status == dist.OutOfMemory {
		err = peerOOM{err}
	}
	return fmt.Errorf("rank %d: %w", d.world.Rank, err)
}

// peerOOM is another rank's out-of-memory, classified as out-of-memory for
// the exit status (after the memory monitor, which must not report it as
// this rank's).
type peerOOM struct{ err error }

func (e peerOOM) Error() string        { return e.err.Error() }
func (e peerOOM) Unwrap() error        { return e.err }
func (e peerOOM) Is(target error) bool { return target == ct.ErrOutOfMemory }

// linePrefixer writes prefix at the start of every line.
type linePrefixer struct {
	mu     sync.Mutex
	w      io.Writer
	prefix []byte
	start  bool
}

func (p *linePrefixer) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(b)
	var out []byte
	for len(b) > 0 {
		if p.start {
			out = append(out, p.prefix...)
			p.start = false
		}
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			out = append(out, b...)
			break
		}
		out = append(out, b[:i+1]...)
		b = b[i+1:]
		p.start = true
	}
	if _, err := p.w.Write(out); err != nil {
		return 0, err
	}
	return n, nil
}
