package dist

import (
	"fmt"
	"hash/fnv"
	"os"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// Helpers for starting every rank from rank 0's state: rank 0 alone reads a
// checkpoint (the other ranks may not even see its file system), then
// broadcasts what it holds.

// Agree is a start-up agreement: every rank reports local (nil: ready); if
// some rank failed, every rank returns an error: its own on the failed
// rank, else one naming the rank and what (e.g. "could not resume").
func (c *Comm) Agree(local error, what string) error {
	s := ct.NewScope()
	defer s.Close()
	ag, err := c.Exchange(s, StatusOf(local), nil, 0)
	if local != nil {
		return local
	}
	if err != nil {
		return fmt.Errorf("dist: rank %d: starting the data-parallel run: %w", c.Rank(), err)
	}
	if r, st, failed := ag.Failed(); failed {
		return fmt.Errorf("rank %d %s: %w", r, what, &PeerError{Rank: r, Status: st})
	}
	return nil
}

// BroadcastTensors overwrites every rank's tensors with rank 0's (each
// contiguous, on the group's device, with the same shape on every rank).
func (c *Comm) BroadcastTensors(ts ...*ct.Tensor) error {
	for _, t := range ts {
		if err := c.Broadcast(t); err != nil {
			return fmt.Errorf("dist: rank %d: receiving rank 0's state: %w", c.Rank(), err)
		}
	}
	return nil
}

// BroadcastInt64s returns rank 0's values (v has the same length on every rank).
func (c *Comm) BroadcastInt64s(v []int64) ([]int64, error) {
	var out []int64
	err := c.broadcastHost(v, func(t *ct.Tensor) { out = t.Int64s() })
	return out, err
}

// BroadcastFloat64s returns rank 0's values (v has the same length on every rank).
func (c *Comm) BroadcastFloat64s(v []float64) ([]float64, error) {
	var out []float64
	err := c.broadcastHost(v, func(t *ct.Tensor) { out = t.Float64s() })
	return out, err
}

// BroadcastBytes returns rank 0's bytes (b has the same length on every rank).
func (c *Comm) BroadcastBytes(b []byte) ([]byte, error) {
	var out []byte
	err := c.broadcastHost(b, func(t *ct.Tensor) { out = t.Bytes() })
	return out, err
}

// broadcastHost sends a Go slice through a tensor on the group's device.
func (c *Comm) broadcastHost(v any, read func(*ct.Tensor)) error {
	s := ct.NewScope()
	defer s.Close()
	var t *ct.Tensor
	if err := ct.Try(func() { t = s.FromSlice(v).To(c.pg.Device(), 0) }); err != nil {
		return err
	}
	if err := c.BroadcastTensors(t); err != nil {
		return err
	}
	return ct.Try(func() { read(t) })
}

// BroadcastGenerator gives every rank rank 0's generator state.
func (c *Comm) BroadcastGenerator(g *ct.Generator) error {
	b, err := g.State()
	if err != nil {
		return err
	}
	if b, err = c.BroadcastBytes(b); err != nil {
		return err
	}
	return g.SetState(b)
}

// JoinEnv joins the job this process's environment describes (FromEnv with
// os.Getenv, then Join): nil for a single process.
func JoinEnv(cfg Config) (*Comm, error) {
	w, err := FromEnv(os.Getenv)
	if err != nil {
		return nil, err
	}
	return Join(w, cfg)
}

// Fingerprint hashes the bytes of tensors (FNV-1a 64), so that ranks can
// check that they read the same data before they train on it.
func Fingerprint(ts ...*ct.Tensor) (uint64, error) {
	h := fnv.New64a()
	err := ct.Try(func() {
		for _, t := range ts {
			h.Write(t.Bytes())
		}
	})
	return h.Sum64(), err
}
