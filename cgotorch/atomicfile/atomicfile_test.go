package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestFailedWriteLeavesTheOldFile: a writer that fails half-way leaves the
// previous content and no temporary file.
func TestFailedWriteLeavesTheOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model000001.pt")
	if err := WriteBytes(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("crash mid-write")
	err := WriteFile(path, 0o644, func(w io.Writer) error {
		if _, err := w.Write([]byte("new partial")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	got, _ := os.ReadFile(path)
	if string(got) != "old" {
		t.Errorf("content %q after a failed write, want old", got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory has %d entries, want only the target", len(entries))
	}
	if err := WriteBytes(path, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(path)
	st, _ := os.Stat(path)
	if string(got) != "new" || st.Mode().Perm() != 0o600 {
		t.Errorf("content %q mode %v", got, st.Mode())
	}
}

func TestTempNameCommit(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "x.h5ad")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := TempName(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmp, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Commit(tmp, path, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "data" {
		t.Errorf("committed %q", b)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Error("temporary file still exists")
	}
}
