package cgotorch_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
	"github.com/scdiffusion/gotorch-train/cgotorch/ptfile"
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

// TestSavePTReadByPyTorch: a state dict and an optimizer-style nested dict
// written by SavePT load with Python's torch.load, and back with LoadPT.
func TestSavePTReadByPyTorch(t *testing.T) {
	py := cgotorchtest.RefPython(t)
	s := ct.NewScope()
	defer s.Close()
	dir := t.TempDir()
	sd := []ct.Named{
		{Name: "fc.weight", T: s.Randn(ct.Options{}, nil, 3, 4)},
		{Name: "fc.bias", T: s.Randn(ct.Of(ct.Float64), nil, 3)},
		{Name: "bn.num_batches_tracked", T: s.Full(5, ct.Of(ct.Int64))},
		{Name: "h", T: s.Randn(ct.Of(ct.Float16), nil, 2)},
	}
	path := filepath.Join(dir, "model000007.pt")
	if err := ct.SaveStateDictPT(path, sd); err != nil {
		t.Fatal(err)
	}
	back, err := ct.LoadPT(path, ct.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.FreeAll(back)
	for i, n := range sd {
		if back[i].Name != n.Name {
			t.Errorf("tensor %d is %q, want %q", i, back[i].Name, n.Name)
		}
		assertClose(t, n.Name, back[i].T, n.T, 0, 0)
	}
	ea, err := ct.PTTensor("", sd[0].T)
	if err != nil {
		t.Fatal(err)
	}
	opt := &ptfile.Dict{Keys: []any{"state", "param_groups"}, Values: []any{
		&ptfile.Dict{Keys: []any{0}, Values: []any{&ptfile.Dict{Keys: []any{"step", "exp_avg"}, Values: []any{3.0, ea}}}},
		[]any{&ptfile.Dict{Keys: []any{"lr", "betas", "amsgrad", "foreach", "params"},
			Values: []any{1e-4, ptfile.Tuple{0.9, 0.999}, false, nil, []any{0}}}},
	}}
	optPath := filepath.Join(dir, "opt000007.pt")
	if err := ct.SavePT(optPath, opt); err != nil {
		t.Fatal(err)
	}
	script := `
import json, sys, torch
sd = torch.load(sys.argv[1])
o = torch.load(sys.argv[2])
g = o["param_groups"][0]
print(json.dumps({"type": type(sd).__name__, "keys": list(sd.keys()),
    "wsum": float(sd["fc.weight"].double().sum()), "bias": str(sd["fc.bias"].dtype),
    "nbt": int(sd["bn.num_batches_tracked"]), "h": str(sd["h"].dtype),
    "lr": g["lr"], "betas": list(g["betas"]), "foreach_none": g["foreach"] is None,
    "step": o["state"][0]["step"], "shape": list(o["state"][0]["exp_avg"].shape)}))
`
	out, err := exec.Command(py, "-c", script, path, optPath).Output()
	if err != nil {
		t.Fatalf("torch.load failed: %v\n%s", err, out)
	}
	var got struct {
		Type        string    `json:"type"`
		Keys        []string  `json:"keys"`
		WSum        float64   `json:"wsum"`
		Bias        string    `json:"bias"`
		H           string    `json:"h"`
		NBT         int       `json:"nbt"`
		LR          float64   `json:"lr"`
		Betas       []float64 `json:"betas"`
		ForeachNone bool      `json:"foreach_none"`
		Step        float64   `json:"step"`
		Shape       []int     `json:"shape"`
	}
	// Some Python builds print library noise on stdout; the JSON is the last line.
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	wsum := s.Adopt(sd[0].T.ToDType(ct.Float64)).Sum().Item()
	if got.Type != "OrderedDict" || fmt.Sprint(got.Keys) != "[fc.weight fc.bias bn.num_batches_tracked h]" ||
		got.WSum != wsum || got.Bias != "torch.float64" || got.H != "torch.float16" || got.NBT != 5 {
		t.Errorf("state dict as seen by torch.load: %+v (weight sum want %v)", got, wsum)
	}
	if got.LR != 1e-4 || fmt.Sprint(got.Betas) != "[0.9 0.999]" || !got.ForeachNone || got.Step != 3 || fmt.Sprint(got.Shape) != "[3 4]" {
		t.Errorf("optimizer dict as seen by torch.load: %+v", got)
	}
}

// TestSafetensorsReadByPythonSafetensors: Python's safetensors library reads
// what SaveSafetensors writes. Debian 12 does not package it; CI's libtorch
// 2.x chroot (Debian trixie) has python3-safetensors, so the test runs there.
func TestSafetensorsReadByPythonSafetensors(t *testing.T) {
	py := cgotorchtest.RefPython(t)
	if err := exec.Command(py, "-c", "import safetensors.numpy").Run(); err != nil {
		t.Skip("python3-safetensors is not installed here (it runs in scripts/ci-torch2.sh's trixie chroot)")
	}
	s := ct.NewScope()
	defer s.Close()
	path := filepath.Join(t.TempDir(), "x.safetensors")
	a := s.Arange(0, 6, 1, ct.Options{}).View(2, 3)
	b := s.Full(-3, ct.Of(ct.Int64), 4)
	if err := ct.SaveSafetensors(path, []ct.Named{{Name: "a", T: a}, {Name: "b", T: b}}, map[string]string{"step": "9"}); err != nil {
		t.Fatal(err)
	}
	script := `
import json, sys
from safetensors import safe_open
from safetensors.numpy import load_file
d = load_file(sys.argv[1])
with safe_open(sys.argv[1], framework="np") as f:
    meta = f.metadata()
print(json.dumps({"a": d["a"].tolist(), "a_dtype": str(d["a"].dtype), "b": d["b"].tolist(), "meta": meta}))
`
	out, err := exec.Command(py, "-c", script, path).Output()
	if err != nil {
		t.Fatalf("safetensors could not read the file: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := `{"a": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], "a_dtype": "float32", "b": [-3, -3, -3, -3], "meta": {"step": "9"}}`
	if got := lines[len(lines)-1]; got != want {
		t.Errorf("python safetensors read\n%s\nwant\n%s", got, want)
	}
}
