package monitor

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scdiffusion/gotorch-train/cgotorch"
)

// TestResumedSeriesAppends: with Append, a run continues the series of the
// run it resumes (the earlier records stay, the plot starts from them);
// without it the series is replaced. A partial last line (a crash mid-write)
// is kept apart from the new records.
func TestResumedSeriesAppends(t *testing.T) {
	dir := t.TempDir()
	series := filepath.Join(dir, "memory.jsonl")
	first, _ := newTestMonitor(t, Options{LogInterval: 10, SeriesPath: series})
	for step := 0; step <= 20; step++ {
		first.LogMemoryUsage(step)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(series, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"step": 30, "rss_by`) // cut short
	f.Close()

	m, _ := newTestMonitor(t, Options{LogInterval: 10})
	if err := m.SetFiles(Files{Series: series, Plot: filepath.Join(dir, "memory.svg"), Append: true}); err != nil {
		t.Fatal(err)
	}
	if n := len(m.plot.pts); n != 3 {
		t.Errorf("the resumed plot starts with %d points, want the 3 earlier samples", n)
	}
	m.LogMemoryUsage(40)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(series)
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], `{"step":0,`) || !strings.HasPrefix(lines[4], `{"step":40,`) {
		t.Fatalf("appended series:\n%s", b)
	}
	svg, _ := os.ReadFile(filepath.Join(dir, "memory.svg"))
	if !strings.Contains(string(svg), "4 samples") && !strings.Contains(string(svg), "<svg") {
		t.Errorf("plot not written")
	}

	// Without Append the series is replaced.
	m2, _ := newTestMonitor(t, Options{LogInterval: 10, SeriesPath: series})
	m2.LogMemoryUsage(0)
	m2.Close()
	if b, _ := os.ReadFile(series); strings.Count(string(b), "\n") != 1 {
		t.Errorf("a fresh run's series has %d lines, want 1", strings.Count(string(b), "\n"))
	}
}

// TestNoSampleNoPlot: a run that ends before its first sample leaves an
// earlier plot alone instead of replacing it with an empty one.
func TestNoSampleNoPlot(t *testing.T) {
	dir := t.TempDir()
	plot := filepath.Join(dir, "memory.svg")
	if err := os.WriteFile(plot, []byte("<svg>earlier run</svg>"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, _ := newTestMonitor(t, Options{PlotPath: plot})
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(plot); string(b) != "<svg>earlier run</svg>" {
		t.Errorf("the earlier plot was replaced: %q", b)
	}
}

// TestReportNeverOverwrites: the OOM record goes to the first free name.
func TestReportNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	report := filepath.Join(dir, "oom_report.json")
	if err := os.WriteFile(report, []byte("earlier"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, _ := newTestMonitor(t, Options{ReportPath: report})
	rep := m.ReportOOM(&cgotorch.Error{Code: cgotorch.CodeOutOfMemory, Op: "test", Msg: "CPU out of memory (cgotorch allocation limit)"})
	if rep.ReportPath != filepath.Join(dir, "oom_report-2.json") {
		t.Errorf("report written to %q", rep.ReportPath)
	}
	if b, _ := os.ReadFile(report); string(b) != "earlier" {
		t.Error("the earlier report was overwritten")
	}
	if !strings.Contains(strings.Join(rep.Lines(), "\n"), "⚙️ Allocator:") && rep.AllocSettings == "" {
		t.Error("the report lacks the allocator settings")
	}
}

// TestSetFilesOnce: files are set before the first sample, once.
func TestSetFilesOnce(t *testing.T) {
	m, _ := newTestMonitor(t, Options{})
	m.LogMemoryUsage(0)
	if err := m.SetFiles(Files{Series: filepath.Join(t.TempDir(), "s.jsonl")}); !errors.Is(err, ErrOptions) {
		t.Errorf("SetFiles after a sample: %v", err)
	}
}

// TestRemediesNameOnlyAvailableFlags: a command without --microbatch and
// --use_fp16 (train-ae) gets no remedy naming them, and the report says the
// fixed suggestions naming them do not apply to it.
func TestRemediesNameOnlyAvailableFlags(t *testing.T) {
	rc := RunContext{BatchSize: 128, Command: "train-ae", Unavailable: []string{"--microbatch", "--use_fp16"}}
	for _, cause := range []Cause{CauseHost, CauseCapacity, CauseFragmentation, CauseCoTenant, CauseOverhead} {
		for _, r := range Remedies(Diagnosis{Cause: cause}, rc) {
			if strings.HasPrefix(r.Action, "--microbatch") || strings.HasPrefix(r.Action, "--use_fp16") {
				t.Errorf("%s: remedy %q names a flag train-ae lacks", cause, r)
			}
		}
	}
	note := rc.unavailableNote()
	if !strings.Contains(note, "train-ae has no --microbatch or --use_fp16") {
		t.Errorf("note %q", note)
	}
	full := Remedies(Diagnosis{Cause: CauseHost}, RunContext{BatchSize: 128})
	if len(full) == 0 || !strings.HasPrefix(full[0].Action, "--microbatch 128 → 64") {
		t.Errorf("train's remedies: %v", full)
	}
}

// TestMicrobatchRemedyUnderSum: with --microbatch_sum a smaller microbatch
// changes the summed gradient, and the remedy says so instead of promising
// unchanged mathematics.
func TestMicrobatchRemedyUnderSum(t *testing.T) {
	r := Remedies(Diagnosis{Cause: CauseCapacity}, RunContext{BatchSize: 32, Microbatch: 8, SumMicrobatchGrads: true})
	if len(r) == 0 || !strings.HasPrefix(r[0].Action, "--microbatch 8 → 4") || strings.Contains(r[0].Why, "unchanged") ||
		!strings.Contains(r[0].Why, "8× the batch mean instead of 4×") {
		t.Errorf("remedy under --microbatch_sum: %v", r)
	}
}

func TestSummaryLines(t *testing.T) {
	m, _ := newTestMonitor(t, Options{LogInterval: 1, CleanupInterval: 2})
	for step := 0; step < 4; step++ {
		m.OnStep(step)
	}
	lines := m.Summary().Lines()
	text := strings.Join(lines, "\n")
	for _, want := range []string{"Memory summary: 4 samples", "peak RSS", "Cleanup: 2 runs", "Warnings: 0 out-of-memory", "leaks:"} {
		if !strings.Contains(text, want) {
			t.Errorf("summary lacks %q:\n%s", want, text)
		}
	}
}
