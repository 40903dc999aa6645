package nn_test

import (
	"reflect"
	"testing"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/nn"
)

// TestLoadStateDictIsAtomic: LoadStateDict either loads every value or
// leaves the store unchanged. The second value here is a view overlapping
// the store's own flat buffer, on which copy_ into a parameter fails
// (partial overlap): the old loop had already copied the first value when
// it failed. Staging the values first makes the load succeed, with the
// values as they were at the call.
func TestLoadStateDictIsAtomic(t *testing.T) {
	st := nn.NewStore(ct.CPU)
	defer st.Close()
	a := st.Root().Param("a", nn.Constant(2), 4)
	b := st.Root().Param("b", nn.Constant(3), 4)
	if err := st.FlattenParams(); err != nil {
		t.Fatal(err)
	}
	s := ct.NewScope()
	defer s.Close()
	overlap := s.Adopt(st.FlatParams().Detach().Narrow(0, 2, 4)) // a[2], a[3], b[0], b[1]
	want := overlap.Float32s()
	sd := []ct.Named{{Name: "a", T: s.Ones(ct.Options{}, 4)}, {Name: "b", T: overlap}}
	before := st.FlatParams().Float32s()
	err := st.LoadStateDict(sd, true)
	gotA, gotB := a.T.Float32s(), b.T.Float32s()
	switch {
	case err != nil && !reflect.DeepEqual(st.FlatParams().Float32s(), before):
		t.Fatalf("LoadStateDict failed (%v) and left the store partly loaded: a %v b %v (was %v)", err, gotA, gotB, before)
	case err != nil:
		t.Fatalf("LoadStateDict: %v", err)
	case !reflect.DeepEqual(gotA, []float32{1, 1, 1, 1}) || !reflect.DeepEqual(gotB, want):
		t.Fatalf("loaded a %v b %v, want [1 1 1 1] and %v", gotA, gotB, want)
	}
}
