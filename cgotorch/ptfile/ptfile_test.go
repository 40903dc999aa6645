package ptfile_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scdiffusion/gotorch-train/cgotorch/ptfile"
)

// TestUnknownObjectIsAnError: an object the reader cannot interpret (here a
// bare storage, from cgotorch/testdata/make_golden.py) fails the load with
// an error naming its key; before, it was skipped and the load "succeeded"
// with one object fewer.
func TestUnknownObjectIsAnError(t *testing.T) {
	_, err := ptfile.Load("../testdata/unknown_object.pt")
	if !errors.Is(err, ptfile.ErrFormat) || !strings.Contains(err.Error(), `"s"`) || !strings.Contains(err.Error(), "storage") {
		t.Fatalf("err %v, want ErrFormat naming key \"s\" and the storage", err)
	}
	if _, err := ptfile.Load("../testdata/nested.pt"); err != nil {
		t.Fatalf("a checkpoint of known objects: %v", err)
	}
}

// TestNotACheckpoint: files that cannot be torch.save output say so in
// words (not "unknown opcode").
func TestNotACheckpoint(t *testing.T) {
	dir := t.TempDir()
	good, err := os.ReadFile("../testdata/state_dict.pt")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, content, want string
	}{
		{"empty.pt", "", "empty file"},
		{"text.pt", "#!/bin/sh\necho hi\n", "starts with"},
		{"truncated.pt", string(good[:len(good)/2]), "zip archive"},
	} {
		p := filepath.Join(dir, tc.name)
		if err := os.WriteFile(p, []byte(tc.content), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := ptfile.Load(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) || strings.Contains(err.Error(), "opcode") {
			t.Errorf("%s: err %v, want it to name the file and say %q", tc.name, err, tc.want)
		}
	}
}
