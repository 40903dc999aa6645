package cgotorch_test

import (
	"errors"
	"strings"
	"testing"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/monitor"
)

// TestAllocConfReadback: the CPU flavour says the allocator settings do not
// apply; the CUDA flavour on libtorch ≥ 2.2 reads them back from the
// caching allocator (every key, as parsed), older ones say why not.
func TestAllocConfReadback(t *testing.T) {
	text, state, err := ct.AllocConfReadback()
	if err != nil {
		t.Fatal(err)
	}
	b := ct.Build()
	major, minor, _ := monitor.ParseTorchVersion(b.TorchVersion)
	switch {
	case !b.CUDA:
		if state != ct.AllocConfNotApplicable || !strings.Contains(text, "CPU flavour") {
			t.Errorf("CPU flavour: state %d %q", state, text)
		}
		if _, _, err := ct.CUDAVersions(); !errors.Is(err, ct.ErrNoCUDA) {
			t.Errorf("CUDAVersions on the CPU flavour: %v, want ErrNoCUDA", err)
		}
	case major > 2 || (major == 2 && minor >= 2):
		if state != ct.AllocConfRead {
			t.Fatalf("libtorch %s: state %d %q, want the settings read back", b.TorchVersion, state, text)
		}
		for _, key := range []string{"backend:", "expandable_segments:", "max_split_size_mb:", "garbage_collection_threshold:", "roundup_power2_divisions:", "parsed from"} {
			if !strings.Contains(text, key) {
				t.Errorf("read-back %q lacks %q", text, key)
			}
		}
		rt, _, err := ct.CUDAVersions()
		if err != nil || rt <= 0 {
			t.Errorf("CUDAVersions: runtime %d, %v", rt, err)
		}
	default:
		if state != ct.AllocConfUnavailable || !strings.Contains(text, "not available") {
			t.Errorf("libtorch %s: state %d %q", b.TorchVersion, state, text)
		}
	}
}

func TestFormatCUDAVersion(t *testing.T) {
	for v, want := range map[int]string{12040: "12.4", 11080: "11.8", 13000: "13.0", 12021: "12.2.1", 0: "unknown"} {
		if got := ct.FormatCUDAVersion(v); got != want {
			t.Errorf("FormatCUDAVersion(%d) = %q, want %q", v, got, want)
		}
	}
}
