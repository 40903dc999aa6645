package monitor

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scdiffusion/gotorch-train/cgotorch"
)

func TestStepLine(t *testing.T) {
	gpu := Sample{Step: 1000, RSSBytes: 2048*MiB + MiB/2, RSSValid: true, CUDAValid: true,
		CUDA: cgotorch.CUDAMemStats{AllocatedBytes: 4096*MiB + MiB/5, ReservedBytes: 1024*MiB + MiB/10}}
	cases := []struct {
		name string
		s    Sample
		free bool
		want string
	}{
		{"guide example", gpu, false, "Step 1000: CPU: 2048.5MB, GPU: 4096.2MB, GPU Cached: 1024.1MB"},
		{"free cache", Sample{Step: 5, RSSBytes: 100 * MiB, RSSValid: true, CUDAValid: true,
			CUDA: cgotorch.CUDAMemStats{AllocatedBytes: 300 * MiB, ReservedBytes: 512 * MiB}}, true,
			"Step 5: CPU: 100.0MB, GPU: 300.0MB, GPU Cached: 512.0MB, GPU Free Cache: 212.0MB"},
		{"CPU only", Sample{Step: 2000, RSSBytes: 2050*MiB + MiB/10, RSSValid: true, CPUAllocValid: true, CPUTensorBytes: 512*MiB + MiB*3/10}, false,
			"Step 2000: CPU: 2050.1MB, CPU Tensors: 512.3MB"},
		{"CPU only, untracked allocator", Sample{Step: 3, RSSBytes: 10 * MiB, RSSValid: true}, false, "Step 3: CPU: 10.0MB"},
		{"RSS unreadable", Sample{Step: 4}, false, "Step 4: CPU: n/a"},
	}
	for _, c := range cases {
		if got := StepLine(&c.s, c.free); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}

// skipOnCUDA skips tests of the CPU flavour's output shape (gpu_test.go
// covers the CUDA one).
func skipOnCUDA(t *testing.T) {
	t.Helper()
	if cgotorch.CUDAIsAvailable() {
		t.Skip("CPU-flavour output shape")
	}
}

func TestOptionsDefaults(t *testing.T) {
	cases := []struct {
		opts          Options
		logs, samples int
		err           bool
	}{
		{Options{}, 1000, 100, false},
		{Options{LogInterval: 100}, 100, 100, false},
		{Options{LogInterval: 250}, 250, 50, false},
		{Options{LogInterval: 1}, 1, 1, false},
		{Options{LogInterval: -1}, 0, 100, false},
		{Options{LogInterval: 1000, SampleInterval: 1000}, 1000, 1000, false},
		{Options{LogInterval: 10, SampleInterval: 7}, 0, 0, true},
		{Options{SampleInterval: -1}, 0, 0, true},
		{Options{CleanupInterval: -1}, 0, 0, true},
		{Options{Device: -1}, 0, 0, true},
	}
	for _, c := range cases {
		m, err := New(c.opts)
		if c.err {
			if !errors.Is(err, ErrOptions) {
				t.Errorf("%+v: err %v, want ErrOptions", c.opts, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.LogInterval() != c.logs || m.SampleInterval() != c.samples {
			t.Errorf("%+v: log %d sample %d", c.opts, m.LogInterval(), m.SampleInterval())
		}
		m.Close()
	}
}

func TestLogMemoryUsageSchedule(t *testing.T) {
	skipOnCUDA(t)
	m, buf := newTestMonitor(t, Options{LogInterval: 10, SampleInterval: 5, Leak: LeakConfig{Disabled: true}})
	var sampled []int
	for step := 0; step <= 30; step++ {
		s, ok := m.LogMemoryUsage(step)
		if ok {
			sampled = append(sampled, step)
			if s.Step != step || !s.RSSValid || !s.CPUAllocValid || s.CUDAValid || s.NVMLValid {
				t.Fatalf("sample %+v", s)
			}
		} else if s.Step != 0 || s.RSSValid {
			t.Fatalf("not-due step %d returned a sample", step)
		}
	}
	if want := []int{0, 5, 10, 15, 20, 25, 30}; len(sampled) != len(want) {
		t.Fatalf("sampled %v", sampled)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("lines %q", lines)
	}
	for i, l := range lines {
		want := "Step " + []string{"0", "10", "20", "30"}[i] + ": CPU: "
		if !strings.HasPrefix(l, want) || !strings.Contains(l, "MB, CPU Tensors: ") || !strings.HasSuffix(l, "MB") {
			t.Errorf("line %q", l)
		}
	}
	if s := m.Summary(); s.Samples != 7 || !s.RSSValid || s.PeakRSSBytes <= 0 || s.Last.Step != 30 {
		t.Errorf("summary %+v", s)
	}
}

func TestShouldCleanup(t *testing.T) {
	on, _ := newTestMonitor(t, Options{CleanupInterval: 1000})
	off, _ := newTestMonitor(t, Options{})
	for step, want := range map[int]bool{0: true, 1: false, 999: false, 1000: true, 2000: true, 2500: false} {
		if on.ShouldCleanup(step) != want {
			t.Errorf("ShouldCleanup(%d) = %v", step, !want)
		}
		if off.ShouldCleanup(step) {
			t.Errorf("disabled cleanup due at %d", step)
		}
	}
}

// TestOnStepOrder checks U4: on a step that is both a log and a cleanup
// step, the Step line comes first, then the exact cleanup notice.
func TestOnStepOrder(t *testing.T) {
	skipOnCUDA(t)
	for _, terse := range []bool{false, true} {
		m, buf := newTestMonitor(t, Options{LogInterval: 10, CleanupInterval: 20, TerseCleanup: terse})
		var cleanups int
		for step := 0; step <= 40; step++ {
			if r := m.OnStep(step); r.Cleanup != nil {
				cleanups++
				if r.Cleanup.Step != step || !r.Cleanup.RSSValid || r.Cleanup.EmptiedCache || r.Cleanup.GoGC <= 0 || r.Cleanup.Total < r.Cleanup.GoGC {
					t.Errorf("cleanup %+v", r.Cleanup)
				}
			}
		}
		if cleanups != 3 {
			t.Fatalf("%d cleanups", cleanups)
		}
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		var kinds []string
		for _, l := range lines {
			switch {
			case strings.HasPrefix(l, "Step "):
				kinds = append(kinds, l[:strings.Index(l, ":")])
			case l == CleanupNotice:
				kinds = append(kinds, "notice")
			case strings.HasPrefix(l, "  cleanup: CPU ") && strings.Contains(l, "(Go GC ") && strings.HasSuffix(l, "emptyCache n/a)"):
				kinds = append(kinds, "detail")
			default:
				t.Fatalf("unexpected line %q", l)
			}
		}
		want := "Step 0,notice,detail,Step 10,Step 20,notice,detail,Step 30,Step 40,notice,detail"
		if terse {
			want = strings.ReplaceAll(want, ",detail", "")
		}
		if got := strings.Join(kinds, ","); got != want {
			t.Errorf("terse=%v order:\n got %s\nwant %s", terse, got, want)
		}
		if s := m.Summary(); s.Cleanups != 3 || s.CleanupMedian <= 0 || s.CleanupP95 < s.CleanupMedian {
			t.Errorf("summary cleanups %+v", s)
		}
	}
}

func TestSeriesJSONL(t *testing.T) {
	skipOnCUDA(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "mem.jsonl")
	m, _ := newTestMonitor(t, Options{LogInterval: 10, SeriesPath: path})
	for step := 0; step <= 50; step++ {
		m.LogMemoryUsage(step)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("line %d: %v", n, err)
		}
		if rec["step"].(float64) != float64(n*10) || rec["rss_bytes"].(float64) <= 0 || rec["gpu_allocated_bytes"] != nil ||
			rec["device_total_bytes"] != nil || rec["process_gpu_bytes"] != nil || rec["cpu_tensor_bytes"] == nil {
			t.Fatalf("record %v", rec)
		}
		for _, k := range []string{"time", "peak_rss_bytes", "sys_total_bytes", "sys_available_bytes", "cgroup_limit_bytes", "live_tensors",
			"cpu_tensor_peak_bytes", "cpu_ooms", "cpu_alloc_limit_bytes", "gpu_reserved_bytes", "gpu_reserved_peak_bytes",
			"gpu_inactive_split_bytes", "gpu_num_alloc_retries", "gpu_num_ooms", "nvml_memory_version", "device_free_bytes",
			"device_reserved_bytes", "other_processes", "other_processes_bytes"} {
			if _, ok := rec[k]; !ok {
				t.Fatalf("record lacks %q: %v", k, rec)
			}
		}
		n++
	}
	if n != 6 {
		t.Fatalf("%d records", n)
	}
}

func TestMonitorWithFakeNVML(t *testing.T) {
	pid := os.Getpid()
	fake := &fakeNVML{bus: "00000000:3B:00.0", driver: "580.65.06",
		mem:   DeviceMemory{TotalBytes: 16 * GiB, FreeBytes: 10 * GiB, UsedBytes: 6*GiB - 300*MiB, ReservedBytes: 300 * MiB, Version: 2},
		procs: []GPUProcess{{PID: pid, UsedBytes: 5 * GiB, UsedKnown: true}}}
	m, buf := newTestMonitor(t, Options{LogInterval: 1, NVML: fake, PCIBusID: "0000:3b:00.0", Leak: LeakConfig{Disabled: true}})
	if err := m.NVMLStatus(); err != nil {
		t.Fatal(err)
	}
	s, _ := m.LogMemoryUsage(1)
	if !s.NVMLValid || s.Device != fake.mem || !s.ProcessGPUValid || s.ProcessGPUBytes != 5*GiB || len(s.OtherProcesses) != 0 {
		t.Fatalf("sample %+v", s)
	}
	if total, ok := m.DeviceTotalBytes(); !ok || total != 16*GiB {
		t.Fatalf("DeviceTotalBytes %d %v", total, ok)
	}
	// A co-tenant appears, then leaves; this process drops out of the list
	// (unknown, not zero).
	fake.procs = append(fake.procs, GPUProcess{PID: 4242, UsedBytes: 3 * GiB, UsedKnown: true})
	s, _ = m.LogMemoryUsage(2)
	if s.OtherProcessesBytes != 3*GiB || len(s.OtherProcesses) != 1 {
		t.Fatalf("others %+v", s.OtherProcesses)
	}
	fake.procs = []GPUProcess{{PID: 7, UsedKnown: false}}
	s, _ = m.LogMemoryUsage(3)
	if s.ProcessGPUValid || s.OtherProcessesBytes != 0 {
		t.Fatalf("absent self: %+v", s)
	}
	fake.down = true
	s, _ = m.LogMemoryUsage(4)
	if s.NVMLValid || s.ProcessGPUValid {
		t.Fatalf("NVML down: %+v", s)
	}
	out := buf.String()
	for _, want := range []string{"⚠️ GPU co-tenant appeared on cuda:0: PID 4242 using 3.0 GiB",
		"ℹ️ GPU co-tenant left cuda:0: PID 4242", "⚠️ GPU co-tenant appeared on cuda:0: PID 7\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if m.Summary().CoTenantChanges != 3 {
		t.Errorf("co-tenant changes %d", m.Summary().CoTenantChanges)
	}
	m.Close()
	if fake.closed != 0 {
		t.Error("Monitor closed an NVML it did not open")
	}
}

func TestHostPressure(t *testing.T) {
	cg := Sample{RSSValid: true, RSSBytes: 950 * MiB, CgroupLimited: true, CgroupLimitBytes: 1000 * MiB}
	sys := Sample{RSSValid: true, RSSBytes: 2 * GiB, SysValid: true, SysTotalBytes: 16 * GiB, SysAvailableBytes: GiB}
	ok := Sample{RSSValid: true, RSSBytes: GiB, SysValid: true, SysTotalBytes: 16 * GiB, SysAvailableBytes: 12 * GiB}
	if line, warn, _ := hostPressure(&cg, 0); !warn || !strings.Contains(line, "95% of the 1000.0 MiB cgroup limit") {
		t.Errorf("cgroup: %q %v", line, warn)
	}
	if line, warn, _ := hostPressure(&sys, 0); !warn || !strings.Contains(line, "1.0 GiB of 16.0 GiB available (94% used)") {
		t.Errorf("system: %q %v", line, warn)
	}
	if _, warn, clear := hostPressure(&ok, 0); warn || !clear {
		t.Error("no pressure warned")
	}
	if _, warn, _ := hostPressure(&cg, -1); warn {
		t.Error("disabled warned")
	}
	// The monitor prints it once per crossing.
	var lines int
	m, buf := newTestMonitor(t, Options{HostWarnFraction: 0.9})
	for _, s := range []Sample{cg, cg, ok, cg} {
		m.warnings(&s)
	}
	lines = strings.Count(buf.String(), "Host memory low")
	if lines != 2 {
		t.Errorf("%d warnings:\n%s", lines, buf.String())
	}
}

func TestAllocRetryWarning(t *testing.T) {
	m, buf := newTestMonitor(t, Options{Run: RunContext{TorchVersion: "2.5.1"}, Leak: LeakConfig{Disabled: true}})
	retries := []int64{0, 0, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 9}
	for i, r := range retries {
		s := cudaSample(GiB, 2*GiB, -1, 0)
		s.Step, s.CUDA.NumAllocRetries = i*100, r
		m.samples = i + 1
		m.warnings(&s)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{
		"⚠️ Allocator retries: num_alloc_retries rose from 0 to 2 (first rise at step 200): cudaMalloc failed and the cache was flushed, " +
			"a sign of fragmentation or memory pressure; consider PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True or a smaller --microbatch",
		"⚠️ Allocator retries: num_alloc_retries rose from 3 to 9 (first rise at step 200): cudaMalloc failed and the cache was flushed, " +
			"a sign of fragmentation or memory pressure; consider PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True or a smaller --microbatch",
	}
	if len(lines) != 2 || lines[0] != want[0] || lines[1] != want[1] {
		t.Fatalf("lines:\n%s", buf.String())
	}
	if m.Summary().AllocRetryRises != 3 {
		t.Fatalf("rises %d", m.Summary().AllocRetryRises)
	}
}
