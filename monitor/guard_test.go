package monitor

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/scdiffusion/gotorch-train/cgotorch"
)

// matmulChain multiplies a 512×512 float32 (1 MiB) matrix by itself n
// times in one scope; every product is a new 1 MiB tensor.
func matmulChain(n int) error {
	s := cgotorch.NewScope()
	return s.Run(func() error {
		x := s.Full(0.001, cgotorch.Options{}, 512, 512)
		for i := 0; i < n; i++ {
			x = x.MatMul(x)
		}
		_ = x.Sum().Item()
		return nil
	})
}

func newTestMonitor(t *testing.T, opts Options) (*Monitor, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	if opts.Out == nil {
		opts.Out = &buf
	}
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, &buf
}

// withCPULimit sets cgotorch's CPU allocation limit to the bytes in use now
// plus headroom, and removes it when the test ends.
func withCPULimit(t *testing.T, headroom int64) {
	t.Helper()
	cgotorch.SetCPUAllocLimit(cgotorch.CPUAllocatorStats().AllocatedBytes + headroom)
	t.Cleanup(func() { cgotorch.SetCPUAllocLimit(0) })
}

var summaryRE = regexp.MustCompile(`^💾 Memory Summary: \{'current_cpu_mb': \d+\.\d, 'current_gpu_mb': None, 'peak_cpu_mb': \d+\.\d, ` +
	`'peak_gpu_mb': None, 'gpu_cached_mb': None, 'peak_gpu_cached_mb': None, 'nvml_process_gpu_mb': None, ` +
	`'device_free_mb': None, 'device_total_mb': None, 'num_alloc_retries': None, 'num_ooms': \d+\}$`)

// TestGuardRealCPUOutOfMemory provokes a real out-of-memory error inside
// libtorch (cgotorch's CPU allocation limit), both as a panic from tensor
// math and as a returned error, and checks the report, the cleanup, the
// typed error, the JSON record, that every tensor was freed, and that the
// process keeps working once the limit is gone.
func TestGuardRealCPUOutOfMemory(t *testing.T) {
	if cgotorch.CUDAIsAvailable() {
		t.Skip("CPU-flavour test")
	}
	for _, mode := range []string{"panic", "error"} {
		t.Run(mode, func(t *testing.T) {
			base := cgotorch.LiveTensors()
			dir := t.TempDir()
			m, buf := newTestMonitor(t, Options{LogInterval: 10, ReportPath: filepath.Join(dir, "oom.json"),
				Run: RunContext{BatchSize: 32, Microbatch: 8}, Program: "gotorch-train test"})
			m.LogMemoryUsage(10)
			withCPULimit(t, 6*MiB)
			err := m.Guard(func() error {
				if mode == "panic" { // tensor math panics with *cgotorch.Error
					s := cgotorch.NewScope()
					defer s.Close()
					x := s.Full(0.001, cgotorch.Options{}, 512, 512)
					for range 20 {
						x = x.MatMul(x)
					}
					return nil
				}
				return matmulChain(20) // Scope.Run returns the error
			})
			cgotorch.SetCPUAllocLimit(0)

			var oe *OOMError
			if !errors.As(err, &oe) || !errors.Is(err, cgotorch.ErrOutOfMemory) {
				t.Fatalf("Guard = %v (%T), want *OOMError wrapping cgotorch.ErrOutOfMemory", err, err)
			}
			var ce *cgotorch.Error
			if !errors.As(err, &ce) || ce.Code != cgotorch.CodeOutOfMemory {
				t.Fatalf("no *cgotorch.Error inside: %v", err)
			}
			rep := oe.Report
			if rep.Diagnosis.Cause != CauseHost || rep.Parsed.Shape != "cpu-limit" || rep.Parsed.RequestedBytes != 512*512*4 {
				t.Fatalf("diagnosis %+v parsed %+v", rep.Diagnosis, rep.Parsed)
			}
			if got := cgotorch.LiveTensors(); got != base {
				t.Fatalf("live tensors %d, want %d", got, base)
			}
			lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
			i := 0
			for i < len(lines) && !strings.HasPrefix(lines[i], "❌") {
				i++
			}
			if i+7 > len(lines) {
				t.Fatalf("no report in:\n%s", buf.String())
			}
			if lines[i] != "❌ Memory Error: CPU out of memory (cgotorch allocation limit)" {
				t.Errorf("U5 line %q", lines[i])
			}
			if !summaryRE.MatchString(lines[i+1]) {
				t.Errorf("U6 line %q", lines[i+1])
			}
			want := append([]string{"💡 Suggestions:"}, SuggestionLines()...)
			for k, w := range want {
				if lines[i+2+k] != w {
					t.Errorf("U7 line %d: %q, want %q", k, lines[i+2+k], w)
				}
			}
			rest := strings.Join(lines[i+7:], "\n")
			for _, s := range []string{"🔎 Cause: host: host memory: the CPU allocator could not add 1.0 MiB",
				"   a) --microbatch 8 → 4 (same --batch_size 32 in 8 chunks", "ℹ️ gotorch-train test, libtorch ",
				"📄 Full message and statistics: " + rep.ReportPath, "\n" + CleanupNotice + "\n  cleanup: CPU "} {
				if !strings.Contains(rest, s) {
					t.Errorf("report lacks %q:\n%s", s, rest)
				}
			}
			b, err := os.ReadFile(rep.ReportPath)
			if err != nil {
				t.Fatal(err)
			}
			var rec map[string]any
			if err := json.Unmarshal(b, &rec); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(rec["message"].(string), "Tried to allocate 1048576 bytes") || rec["diagnosis"].(map[string]any)["cause"] != "host" {
				t.Errorf("record: %s", b)
			}
			// The process keeps working without the limit.
			if err := matmulChain(8); err != nil {
				t.Fatalf("after removing the limit: %v", err)
			}
			if got := cgotorch.LiveTensors(); got != base {
				t.Fatalf("live tensors %d, want %d", got, base)
			}
			if s := m.Summary(); s.OOMs != 1 || s.Cleanups != 1 {
				t.Errorf("summary OOMs %d cleanups %d", s.OOMs, s.Cleanups)
			}
		})
	}
}

func TestGuardPassesOtherOutcomes(t *testing.T) {
	m, buf := newTestMonitor(t, Options{})
	if err := m.Guard(func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	plain := errors.New("data file missing")
	if err := m.Guard(func() error { return plain }); err != plain {
		t.Fatalf("plain error changed: %v", err)
	}
	// A non-OOM *cgotorch.Error panic is returned as the error (as cgotorch.Try does).
	err := m.Guard(func() error {
		s := cgotorch.NewScope()
		defer s.Close()
		a := s.Full(1, cgotorch.Options{}, 2, 3)
		a.MatMul(a) // shape mismatch panics
		return nil
	})
	var ce *cgotorch.Error
	if !errors.As(err, &ce) || errors.Is(err, cgotorch.ErrOutOfMemory) {
		t.Fatalf("shape error: %v", err)
	}
	// A nested Guard's OOMError is not reported twice.
	inner := &OOMError{Err: &cgotorch.Error{Code: cgotorch.CodeOutOfMemory, Op: "x", Msg: "CUDA out of memory."}}
	if err := m.Guard(func() error { return inner }); err != inner {
		t.Fatalf("nested: %v", err)
	}
	if buf.Len() != 0 {
		t.Fatalf("printed %q", buf.String())
	}
	// Other panics propagate.
	defer func() {
		if r := recover(); r != "boom" {
			t.Fatalf("recovered %v", r)
		}
	}()
	m.Guard(func() error { panic("boom") })
}
