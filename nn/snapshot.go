package nn

import (
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// BufferSnapshot keeps a copy of a store's buffers (BatchNorm running
// statistics and step counts, frozen tensors), so that a training step that
// fails after its forward pass updated them can be undone: Take at the
// start of the step, Restore after the failure.
type BufferSnapshot struct {
	// Buffers are the store's buffers, in registration order.
	Buffers []*ct.Tensor
	copies  []*ct.Tensor
}

// NewBufferSnapshot allocates a copy of every buffer of st (and takes it).
// Free it when done.
func NewBufferSnapshot(st *Store) (*BufferSnapshot, error) {
	b := &BufferSnapshot{}
	for _, p := range st.All() {
		if p.Buffer {
			b.Buffers = append(b.Buffers, p.T)
		}
	}
	err := ct.Try(func() {
		for _, t := range b.Buffers {
			b.copies = append(b.copies, t.Clone())
		}
	})
	if err != nil {
		b.Free()
		return nil, err
	}
	return b, nil
}

// Take copies the buffers' current values into the snapshot.
func (b *BufferSnapshot) Take() error { return b.copy(true) }

// Restore copies the snapshot back into the buffers.
func (b *BufferSnapshot) Restore() error { return b.copy(false) }

func (b *BufferSnapshot) copy(take bool) error {
	return ct.Try(func() {
		ct.NoGrad(func() {
			for i, t := range b.Buffers {
				if take {
					b.copies[i].Copy_(t)
				} else {
					t.Copy_(b.copies[i])
				}
			}
		})
	})
}

// Free releases the copies. Nil-safe and idempotent.
func (b *BufferSnapshot) Free() {
	if b == nil {
		return
	}
	for _, t := range b.copies {
		t.Free()
	}
	b.copies = nil
}
