package cgotorch_test

import (
	"os"
	"path/filepath"
	"testing"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

func TestSafetensorsRoundTrip(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	in := []ct.Named{
		{Name: "a.weight", T: s.Randn(ct.Options{}, nil, 3, 5)},
		{Name: "a.bias", T: s.Randn(ct.Of(ct.Float64), nil, 5)},
		{Name: "count", T: s.Full(7, ct.Of(ct.Int64))},
		{Name: "half", T: s.Randn(ct.Of(ct.Float16), nil, 4)},
		{Name: "bf", T: s.Randn(ct.Of(ct.BFloat16), nil, 2, 2)},
		{Name: "mask", T: s.FromSlice([]bool{true, false, true})},
		{Name: "empty", T: s.Zeros(ct.Options{}, 0, 3)},
	}
	path := filepath.Join(t.TempDir(), "x.safetensors")
	if err := ct.SaveSafetensors(path, in, map[string]string{"step": "12"}); err != nil {
		t.Fatal(err)
	}
	out, meta, err := ct.LoadSafetensors(path, ct.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.FreeAll(out)
	if meta["step"] != "12" {
		t.Errorf("metadata = %v", meta)
	}
	got := map[string]*ct.Tensor{}
	for _, n := range out {
		got[n.Name] = n.T
	}
	for _, n := range in {
		assertClose(t, n.Name, got[n.Name], n.T, 0, 0)
	}
}

// TestLoadPTStateDict reads state dicts written by Python's torch.save.
func TestLoadPTStateDict(t *testing.T) {
	s := ct.NewScope()
	defer s.Close()
	want := golden(t, s, "testdata/state_dict_expected.safetensors")
	sd, err := ct.LoadPT("testdata/state_dict.pt", ct.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.FreeAll(sd)
	names := []string{"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked", "2.weight"}
	if len(sd) != len(names) {
		t.Fatalf("%d tensors, want %d", len(sd), len(names))
	}
	for i, n := range sd {
		if n.Name != names[i] {
			t.Errorf("tensor %d is %q, want %q (file order)", i, n.Name, names[i])
		}
		assertClose(t, n.Name, n.T, want[n.Name], 0, 0)
	}

	nested, err := ct.LoadPT("testdata/nested.pt", ct.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.FreeAll(nested)
	got := map[string]*ct.Tensor{}
	for _, n := range nested {
		got[n.Name] = n.T
	}
	assertClose(t, "state_dict.0.weight", got["state_dict.0.weight"], want["0.weight"], 0, 0)
	assertClose(t, "strided (transposed view)", got["strided"], want["strided"], 0, 0)
	assertClose(t, "half", got["half"], want["half"], 0, 0)
}

func TestLoadErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.safetensors")
	if err := os.WriteFile(bad, []byte{1, 2, 3}, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ct.LoadSafetensors(bad, ct.CPU); err == nil {
		t.Error("truncated safetensors file loaded")
	}
	if _, err := ct.LoadPT(bad, ct.CPU); err == nil {
		t.Error("garbage .pt file loaded")
	}
	if _, err := ct.LoadPT(filepath.Join(dir, "missing.pt"), ct.CPU); err == nil {
		t.Error("missing .pt file loaded")
	}
}
