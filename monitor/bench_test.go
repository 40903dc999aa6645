package monitor

import (
	"io"
	"path/filepath"
	"testing"
)

// The benchmarks measure the monitor's cost per call on this machine. To
// express it as a share of training throughput, combine
// BenchmarkLogMemoryUsageInterval100 (the monitoring cost of 100 steps at
// log_interval 100) with the training step time:
//
//	overhead = ns/op(Interval100) / (100 × step time in ns)
//
// BenchmarkTrainStepMLP and BenchmarkTrainStepMLPMonitored do that for a
// small real CPU training step.

func benchMonitor(b *testing.B, opts Options) *Monitor {
	b.Helper()
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	m, err := New(opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

// BenchmarkLogMemoryUsageNotDue: a step that is not due (a single modulo test).
func BenchmarkLogMemoryUsageNotDue(b *testing.B) {
	m := benchMonitor(b, Options{LogInterval: 100})
	step := 1
	for b.Loop() {
		m.LogMemoryUsage(step)
	}
}

// BenchmarkLogMemoryUsageDue: a due step at log_interval 100: sample, Step
// line, JSONL series record, plot point and the leak test (window full).
func BenchmarkLogMemoryUsageDue(b *testing.B) {
	m := benchMonitor(b, Options{LogInterval: 100, SeriesPath: filepath.Join(b.TempDir(), "s.jsonl"), Leak: LeakConfig{WarmupSteps: -1}})
	step := 0
	for range 250 { // fill the leak windows first
		m.LogMemoryUsage(step)
		step += 100
	}
	for b.Loop() {
		m.LogMemoryUsage(step)
		step += 100
	}
}

// BenchmarkLogMemoryUsageInterval100: the monitoring cost of 100 training
// steps at log_interval 100 (99 calls not due, one due).
func BenchmarkLogMemoryUsageInterval100(b *testing.B) {
	m := benchMonitor(b, Options{LogInterval: 100, Leak: LeakConfig{WarmupSteps: -1}})
	step := 0
	for range 250 * 100 {
		m.LogMemoryUsage(step)
		step++
	}
	for b.Loop() {
		for range 100 {
			m.LogMemoryUsage(step)
			step++
		}
	}
}

// BenchmarkSampleCPU: one Sample without CUDA or NVML (RSS, VmHWM,
// /proc/meminfo, live handles, CPU allocator).
func BenchmarkSampleCPU(b *testing.B) {
	m := benchMonitor(b, Options{DisableNVML: true})
	for b.Loop() {
		m.Sample(0)
	}
}

// BenchmarkSampleFakeNVML: one Sample through the NVML code path with a
// fake library (the driver's own cost is measured on a GPU machine).
func BenchmarkSampleFakeNVML(b *testing.B) {
	fake := &fakeNVML{bus: "0000:01:00.0", mem: DeviceMemory{TotalBytes: 16 * GiB, FreeBytes: 8 * GiB, Version: 2},
		procs: []GPUProcess{{PID: 1, UsedBytes: GiB, UsedKnown: true}, {PID: 2, UsedBytes: GiB, UsedKnown: true}}}
	m := benchMonitor(b, Options{NVML: fake, PCIBusID: "0000:01:00.0"})
	for b.Loop() {
		m.Sample(0)
	}
}

// BenchmarkSampleNVML: one Sample with the real NVML (skipped without a driver).
func BenchmarkSampleNVML(b *testing.B) {
	m := benchMonitor(b, Options{})
	if m.NVMLStatus() != nil {
		b.Skip("no NVML here")
	}
	for b.Loop() {
		m.Sample(0)
	}
}

// BenchmarkCleanupMemory: one CleanupMemory (on the CPU: Go GC only).
func BenchmarkCleanupMemory(b *testing.B) {
	m := benchMonitor(b, Options{})
	for b.Loop() {
		m.CleanupMemory()
	}
}

// BenchmarkLeakTest200: one leak test of one series over a full 200-sample window.
func BenchmarkLeakTest200(b *testing.B) {
	x := make([]float64, 200)
	y := make([]float64, 200)
	for i := range x {
		x[i], y[i] = float64(i*100), float64(GiB+(i*7919)%(4*MiB))
	}
	var buf []float64
	for b.Loop() {
		_, buf = lowerBoundExceeds(x, y, 0.999, 1.048576, buf)
	}
}

// BenchmarkTrainStepMLP is a small real CPU training step (256→512→256
// MLP, microbatch 64, backward, AdamW) without monitoring.
func BenchmarkTrainStepMLP(b *testing.B) {
	t := &testing.T{}
	mlp := newMLPStep(t)
	defer mlp.close()
	for b.Loop() {
		if err := mlp.step(64); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTrainStepMLPMonitored is the same step followed by
// LogMemoryUsage at log_interval 100.
func BenchmarkTrainStepMLPMonitored(b *testing.B) {
	t := &testing.T{}
	mlp := newMLPStep(t)
	defer mlp.close()
	m := benchMonitor(b, Options{LogInterval: 100, Leak: LeakConfig{WarmupSteps: -1}})
	step := 0
	for b.Loop() {
		if err := mlp.step(64); err != nil {
			b.Fatal(err)
		}
		m.LogMemoryUsage(step)
		step++
	}
}
