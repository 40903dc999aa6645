package npz

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFloat32WriterMatchesWrite: streaming an array in pieces gives the
// same bytes as Write (hence as np.savez); an incomplete or overfull array
// leaves no file behind.
func TestFloat32WriterMatchesWrite(t *testing.T) {
	dir := t.TempDir()
	v := make([]float32, 7*128)
	for i := range v {
		v[i] = float32(i%97)/13 - 3
	}
	want := filepath.Join(dir, "whole.npz")
	must(t, Write(want, Named{"cell_gen", &Array{Shape: []int{7, 128}, Data: v}}))
	got := filepath.Join(dir, "stream.npz")
	w, err := CreateFloat32(got, "cell_gen", 7, 128)
	must(t, err)
	for _, cut := range [][2]int{{0, 128}, {128, 128}, {128, 640}, {640, 896}} {
		must(t, w.Write(v[cut[0]:cut[1]]))
	}
	if _, err := os.Stat(got); err == nil {
		t.Fatal("the file exists before Close")
	}
	must(t, w.Close())
	a, _ := os.ReadFile(want)
	b, _ := os.ReadFile(got)
	if !bytes.Equal(a, b) {
		t.Fatalf("streamed file differs from Write's (%d vs %d bytes)", len(b), len(a))
	}
	short := filepath.Join(dir, "short.npz")
	w, err = CreateFloat32(short, "cell_gen", 2, 3)
	must(t, err)
	must(t, w.Write([]float32{1, 2, 3}))
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), "3 of 6 values") {
		t.Errorf("incomplete Close: %v", err)
	}
	w, err = CreateFloat32(short, "cell_gen", 1, 3)
	must(t, err)
	if err := w.Write([]float32{1, 2, 3, 4}); err == nil {
		t.Error("overfull Write: no error")
	}
	w.Close()
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("files left in the folder: %v", entries)
	}
}
