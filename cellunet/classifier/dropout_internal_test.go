package classifier

import (
	"testing"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/nn"
)

// TestDropoutRowsCutFromWholeBatch checks the data-parallel Dropout: a
// rank's rows [off, off+n) get exactly (bit for bit) the rows of the mask
// one process draws for the whole batch from a generator in the same state.
func TestDropoutRowsCutFromWholeBatch(t *testing.T) {
	const total, c = 12, 40
	for _, tc := range []struct{ off, n int64 }{{0, total}, {0, total / 2}, {total / 2, total / 2}, {8, 4}} {
		s := ct.NewScope()
		whole, part := newGen(t, 99), newGen(t, 99)
		x := s.Ones(ct.Options{}, total, c)
		want := x.Dropout(0.3, true, whole)

		m := &Model{cfg: Config{Dropout: 0.3}}
		m.drop = &nn.Dropout{P: 0.3, Training: true, Gen: part}
		m.SetDataParallel(nil, total, tc.off)
		got := m.dropRows(s.Ones(ct.Options{}, tc.n, c))
		g, w := got.Float32s(), want.Narrow(0, tc.off, tc.n).Float32s()
		for i := range w {
			if g[i] != w[i] {
				t.Fatalf("rows %d..%d: element %d is %v, the whole batch's mask has %v", tc.off, tc.off+tc.n, i, g[i], w[i])
			}
		}
		s.Close()
	}
}

func newGen(t *testing.T, seed uint64) *ct.Generator {
	g, err := ct.NewGenerator(ct.CPU, seed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g
}
