package cgotorchtest

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// RefPythonEnv names the environment variable that chooses the Python
// interpreter with PyTorch used by tests that run PyTorch at test time
// (torch.load of our files, live references). Unset, it is
// /usr/bin/python3, which sees Debian's python3-torch (installed by
// `make deps`); on a machine with a pip torch, point it at that
// interpreter.
const RefPythonEnv = "GOTORCH_REF_PYTHON"

var torchVersion struct {
	once    sync.Once
	version string
	err     error
	out     []byte
}

// RefPython returns the interpreter that tests run PyTorch with. When it
// cannot import torch, the test fails, naming the interpreter and what to
// install or set: a missing reference is a failure, never a silent pass.
func RefPython(tb testing.TB) string {
	tb.Helper()
	py := os.Getenv(RefPythonEnv)
	if py == "" {
		py = "/usr/bin/python3"
	}
	torchVersion.once.Do(func() {
		out, err := exec.Command(py, "-c", "import torch; print(torch.__version__)").CombinedOutput()
		torchVersion.out, torchVersion.err = out, err
		if err == nil {
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			torchVersion.version = lines[len(lines)-1]
		}
	})
	if torchVersion.err != nil {
		tb.Fatalf("%s cannot import torch (%v): install Debian's python3-torch (make deps) or set %s to a Python with PyTorch\n%s",
			py, torchVersion.err, RefPythonEnv, torchVersion.out)
	}
	return py
}

// majorMinor is "1.13" of "1.13.0a0+git..." (or the whole string).
func majorMinor(v string) string {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return v
	}
	return parts[0] + "." + parts[1]
}

// LiveReference runs the Python script at path (with args) under RefPython
// on this machine and returns its standard output. The script is the reference for a
// computation whose result depends on rounding in a way that no golden file
// can fix (a long training trajectory): it runs on the same libtorch line as
// the binding, with the same OpenBLAS kernels (OPENBLAS_CORETYPE and the rest
// of the environment are inherited) and the same intra-op thread count
// (Threads(), passed as $GOTORCH_TEST_THREADS, OMP_NUM_THREADS and
// OPENBLAS_NUM_THREADS). The test fails when the interpreter's torch is
// another major.minor version than the linked libtorch, or the script fails.
func LiveReference(tb testing.TB, path string, args ...string) []byte {
	tb.Helper()
	py := RefPython(tb)
	have, want := majorMinor(torchVersion.version), majorMinor(ct.Build().TorchVersion)
	if have != want {
		tb.Fatalf("%s has torch %s but the binding runs libtorch %s: a live reference needs the same version (set %s)",
			py, torchVersion.version, ct.Build().TorchVersion, RefPythonEnv)
	}
	n, err := Threads()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(py, append([]string{path}, args...)...)
	ns := strconv.Itoa(n)
	cmd.Env = append(os.Environ(), ThreadsEnv+"="+ns, "OMP_NUM_THREADS="+ns, "OPENBLAS_NUM_THREADS="+ns)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("live reference (%s): %v\n%s", py, err, stderr.Bytes())
	}
	return out
}
