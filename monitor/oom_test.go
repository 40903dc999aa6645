package monitor

import (
	"strings"
	"testing"

	"github.com/scdiffusion/gotorch-train/cgotorch"
)

const (
	msg2xCapacity = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 11.91 GiB of which 406.38 MiB is free. " +
		"Including non-PyTorch memory, this process has 11.51 GiB memory in use. Of the allocated memory 11.18 GiB is allocated by PyTorch, " +
		"and 219.44 MiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try setting " +
		"PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation. See documentation for Memory Management " +
		"(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
	msg2xFragmented = "CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of 63.43 GiB of which 120.00 MiB is free. " +
		"Including non-PyTorch memory, this process has 55.05 GiB memory in use. Of the allocated memory 16.54 GiB is allocated by PyTorch, " +
		"and 37.94 GiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try setting " +
		"PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for Memory Management  " +
		"(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
	// 2.1's message (note "capacty") listing every process on the device.
	msg21Processes = "CUDA out of memory. Tried to allocate 448.00 MiB. GPU 1 has a total capacty of 79.10 GiB of which 364.31 MiB is free. " +
		"Process 175080 has 1.46 GiB memory in use. Process 175356 has 77.26 GiB memory in use. Of the allocated memory 72.12 GiB is " +
		"allocated by PyTorch, and 3.78 GiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try " +
		"setting max_split_size_mb to avoid fragmentation.  See documentation for Memory Management and PYTORCH_CUDA_ALLOC_CONF"
	msg2xCoTenant = "CUDA out of memory. Tried to allocate 3.00 GiB. GPU 0 has a total capacity of 15.77 GiB of which 1.50 GiB is free. " +
		"Process 4242 has 8.00 GiB memory in use. Process 1000 has 6.00 GiB memory in use. Of the allocated memory 5.50 GiB is allocated " +
		"by PyTorch, with 0 bytes allocated in private pools (e.g., CUDA Graphs), and 200.00 MiB is reserved by PyTorch but unallocated."
	msg113Fragmented = "CUDA out of memory. Tried to allocate 1.50 GiB (GPU 0; 15.78 GiB total capacity; 9.20 GiB already allocated; " +
		"1.10 GiB free; 14.30 GiB reserved in total by PyTorch) If reserved memory is >> allocated memory try setting max_split_size_mb " +
		"to avoid fragmentation.  See documentation for Memory Management and PYTORCH_CUDA_ALLOC_CONF"
	msg113Capacity = "CUDA out of memory. Tried to allocate 36.00 MiB (GPU 0; 7.93 GiB total capacity; 130.35 MiB already allocated; " +
		"47.06 MiB free; 2.00 GiB allowed; 188.00 MiB reserved in total by PyTorch) If reserved memory is >> allocated memory try " +
		"setting max_split_size_mb to avoid fragmentation.  See documentation for Memory Management and PYTORCH_CUDA_ALLOC_CONF"
	// A real 1.13 message (the caching allocator on a shared 8 GB card).
	msg113Colab = "CUDA out of memory. Tried to allocate 36.00 MiB (GPU 0; 7.93 GiB total capacity; 130.35 MiB already allocated; " +
		"47.06 MiB free; 188.00 MiB reserved in total by PyTorch) If reserved memory is >> allocated memory try setting " +
		"max_split_size_mb to avoid fragmentation.  See documentation for Memory Management and PYTORCH_CUDA_ALLOC_CONF"
	msgCPULimit   = "CPU out of memory (cgotorch allocation limit). Tried to allocate 4194304 bytes with 12582912 bytes in use and a limit of 16777216 bytes."
	msgCPUDefault = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 1099511627776 bytes. Error code 12 (Cannot allocate memory)"
	msgCUDAError  = "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported at some other API call."
	msgGeneric    = "Out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 8.00 GiB of which 0 bytes is free."
)

func TestParseOOMMessage(t *testing.T) {
	const G, M = int64(GiB), int64(MiB)
	gib := func(x float64) int64 { return int64(x*float64(G) + 0.5) }
	mib := func(x float64) int64 { return int64(x*float64(M) + 0.5) }
	cases := []struct {
		name, msg string
		want      OOMMessage
	}{
		{"2.x capacity", msg2xCapacity, OOMMessage{Shape: "cuda-2.x", Device: "cuda", GPU: 0, RequestedBytes: 2 * G,
			TotalBytes: gib(11.91), FreeBytes: mib(406.38), AllocatedBytes: gib(11.18), ReservedUnallocatedBytes: mib(219.44),
			ReservedBytes: gib(11.18) + mib(219.44), ProcessInUseBytes: gib(11.51)}},
		{"2.1 processes", msg21Processes, OOMMessage{Shape: "cuda-2.x", Device: "cuda", GPU: 1, RequestedBytes: 448 * M,
			TotalBytes: gib(79.10), FreeBytes: mib(364.31), AllocatedBytes: gib(72.12), ReservedUnallocatedBytes: gib(3.78),
			ReservedBytes: gib(72.12) + gib(3.78),
			Processes:     []GPUProcess{{175080, gib(1.46), true}, {175356, gib(77.26), true}}}},
		{"2.x private pools", msg2xCoTenant, OOMMessage{Shape: "cuda-2.x", Device: "cuda", GPU: 0, RequestedBytes: 3 * G,
			TotalBytes: gib(15.77), FreeBytes: gib(1.5), AllocatedBytes: gib(5.5), ReservedUnallocatedBytes: 200 * M, PrivatePoolBytes: 0,
			ReservedBytes: gib(5.5) + 200*M, Processes: []GPUProcess{{4242, 8 * G, true}, {1000, 6 * G, true}}}},
		{"1.13", msg113Fragmented, OOMMessage{Shape: "cuda-1.13", Device: "cuda", GPU: 0, RequestedBytes: gib(1.5),
			TotalBytes: gib(15.78), FreeBytes: gib(1.1), AllocatedBytes: gib(9.2), ReservedBytes: gib(14.3)}},
		{"1.13 allowed", msg113Capacity, OOMMessage{Shape: "cuda-1.13", Device: "cuda", GPU: 0, RequestedBytes: 36 * M,
			TotalBytes: gib(7.93), FreeBytes: mib(47.06), AllocatedBytes: mib(130.35), ReservedBytes: 188 * M, AllowedBytes: 2 * G}},
		{"cgotorch CPU limit", msgCPULimit, OOMMessage{Shape: "cpu-limit", Device: "cpu", RequestedBytes: 4 << 20,
			CPUInUseBytes: 12 << 20, CPULimitBytes: 16 << 20}},
		{"CPU default allocator", msgCPUDefault, OOMMessage{Shape: "cpu", Device: "cpu", RequestedBytes: 1 << 40}},
		{"CUDA error", msgCUDAError, OOMMessage{Shape: "cuda-error", Device: "cuda"}},
		{"device-generic", msgGeneric, OOMMessage{Shape: "cuda-generic", Device: "cuda", GPU: 0, RequestedBytes: 20 * M,
			TotalBytes: 8 * G, FreeBytes: 0}},
		{"cuBLAS", "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`", OOMMessage{Shape: "cuda-library", Device: "cuda"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := c.want
			// Unset fields of the table mean "not in the message".
			def := ParseOOMMessage("")
			fill := func(dst *int64, d int64, set bool) {
				if !set {
					*dst = d
				}
			}
			fill(&w.RequestedBytes, def.RequestedBytes, w.RequestedBytes != 0 || strings.Contains(c.msg, "allocate"))
			fill(&w.TotalBytes, -1, w.TotalBytes != 0)
			fill(&w.FreeBytes, -1, w.FreeBytes != 0 || strings.Contains(c.msg, "0 bytes is free"))
			fill(&w.AllocatedBytes, -1, w.AllocatedBytes != 0)
			fill(&w.ReservedBytes, -1, w.ReservedBytes != 0)
			fill(&w.ReservedUnallocatedBytes, -1, w.ReservedUnallocatedBytes != 0)
			fill(&w.PrivatePoolBytes, -1, strings.Contains(c.msg, "private pools"))
			fill(&w.AllowedBytes, -1, w.AllowedBytes != 0)
			fill(&w.ProcessInUseBytes, -1, w.ProcessInUseBytes != 0)
			fill(&w.CPUInUseBytes, -1, w.CPUInUseBytes != 0)
			fill(&w.CPULimitBytes, -1, w.CPULimitBytes != 0)
			if w.GPU == 0 && !strings.Contains(c.msg, "GPU 0") {
				w.GPU = -1
			}
			got := ParseOOMMessage(c.msg)
			if got.Shape != w.Shape || got.Device != w.Device || got.GPU != w.GPU || got.RequestedBytes != w.RequestedBytes ||
				got.TotalBytes != w.TotalBytes || got.FreeBytes != w.FreeBytes || got.AllocatedBytes != w.AllocatedBytes ||
				got.ReservedBytes != w.ReservedBytes || got.ReservedUnallocatedBytes != w.ReservedUnallocatedBytes ||
				got.PrivatePoolBytes != w.PrivatePoolBytes || got.AllowedBytes != w.AllowedBytes ||
				got.ProcessInUseBytes != w.ProcessInUseBytes || got.CPUInUseBytes != w.CPUInUseBytes || got.CPULimitBytes != w.CPULimitBytes ||
				len(got.Processes) != len(w.Processes) {
				t.Fatalf("\ngot  %+v\nwant %+v", got, w)
			}
			for i := range w.Processes {
				if got.Processes[i] != w.Processes[i] {
					t.Fatalf("process %d: %+v, want %+v", i, got.Processes[i], w.Processes[i])
				}
			}
		})
	}
}

func TestFirstSentence(t *testing.T) {
	for in, want := range map[string]string{
		msg2xCapacity:                 "CUDA out of memory",
		msg113Fragmented:              "CUDA out of memory",
		msgCPULimit:                   "CPU out of memory (cgotorch allocation limit)",
		msgCUDAError:                  "CUDA error: out of memory",
		msgCPUDefault:                 "DefaultCPUAllocator: can't allocate memory: you tried to allocate 1099511627776 bytes",
		"Tried to allocate 20.00 MiB": "Tried to allocate 20.00 MiB",
		"  out of memory.  ":          "out of memory",
	} {
		if got := FirstSentence(in); got != want {
			t.Errorf("FirstSentence(%.40q…) = %q, want %q", in, got, want)
		}
	}
}

// oomFixture is a recorded-statistics fixture: the message and the sample
// taken at report time.
type oomFixture struct {
	name        string
	msg         string
	s           Sample
	pid         int
	run         RunContext
	cause       Cause
	firstRemedy string
}

func cudaSample(alloc, reserved, largest, split int64) Sample {
	return Sample{RSSBytes: 3 << 30, RSSValid: true, PeakRSSBytes: 3 << 30, PeakRSSValid: true, CUDAValid: true,
		CUDA: cgotorch.CUDAMemStats{AllocatedBytes: alloc, PeakAllocatedBytes: alloc, ReservedBytes: reserved, PeakReservedBytes: reserved,
			InactiveSplitBytes: split, LargestFreeBlock: largest, NumSegments: 12}}
}

func withNVML(s Sample, total, free, self int64, others ...GPUProcess) Sample {
	s.NVMLValid, s.Device = true, DeviceMemory{TotalBytes: total, FreeBytes: free, UsedBytes: total - free - 300*MiB, ReservedBytes: 300 * MiB, Version: 2}
	if self >= 0 {
		s.ProcessGPUBytes, s.ProcessGPUValid = self, true
	}
	s.OtherProcesses = others
	for _, o := range others {
		s.OtherProcessesBytes += o.UsedBytes
	}
	return s
}

var oomFixtures = []oomFixture{
	{"2.x capacity", msg2xCapacity, cudaSample(11*GiB, 11*GiB+200*MiB, 150*MiB, 20*MiB), 1000,
		RunContext{BatchSize: 32, Microbatch: 8, TorchVersion: "2.5.1"}, CauseCapacity, "--microbatch 8 → 4"},
	{"2.x fragmentation", msg2xFragmented, cudaSample(16*GiB, 54*GiB, 900*MiB, 30*GiB), 1000,
		RunContext{BatchSize: 64, Microbatch: 16, TorchVersion: "2.5.1", AllocConf: "max_split_size_mb:128,garbage_collection_threshold:0.6"},
		CauseFragmentation, "PYTORCH_CUDA_ALLOC_CONF=garbage_collection_threshold:0.6,expandable_segments:True"},
	{"2.1 process list, fragmentation", msg21Processes, cudaSample(72*GiB, 76*GiB, 300*MiB, 3*GiB), 175356,
		RunContext{BatchSize: 64, Microbatch: 16, TorchVersion: "2.1.0"}, CauseFragmentation, "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"},
	{"1.13 fragmentation", msg113Fragmented, cudaSample(9*GiB, 14*GiB, 1*GiB, 4*GiB), 1000,
		RunContext{BatchSize: 32, Microbatch: 8, TorchVersion: "1.13.0"}, CauseFragmentation, "PYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:128"},
	{"2.x co-tenant from the message", msg2xCoTenant, cudaSample(5*GiB, 5*GiB+200*MiB, 200*MiB, 0), 1000,
		RunContext{BatchSize: 64, Microbatch: 16, TorchVersion: "2.5.1"}, CauseCoTenant, "stop PID 4242 (8.0 GiB)"},
	{"1.13 co-tenant from NVML", "CUDA out of memory. Tried to allocate 3.00 GiB (GPU 0; 15.78 GiB total capacity; 5.50 GiB already allocated; " +
		"1.20 GiB free; 5.70 GiB reserved in total by PyTorch)",
		withNVML(cudaSample(5*GiB, 5*GiB+700*MiB, 200*MiB, 0), 16160*MiB, 1200*MiB, 6*GiB,
			GPUProcess{PID: 777, UsedBytes: 1 * GiB, UsedKnown: true}, GPUProcess{PID: 4242, UsedBytes: 7 * GiB, UsedKnown: true}), 1000,
		RunContext{BatchSize: 64, Microbatch: 16, TorchVersion: "1.13.0"}, CauseCoTenant, "stop PID 4242 (7.0 GiB)"},
	{"non-allocator overhead", "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 8.00 GiB total capacity; 2.80 GiB already allocated; " +
		"100.00 MiB free; 3.00 GiB reserved in total by PyTorch)",
		withNVML(cudaSample(2800*MiB, 3*GiB, 200*MiB, 0), 8*GiB, 100*MiB, 7*GiB+500*MiB), 1000,
		RunContext{BatchSize: 16, Microbatch: 4, UseFP16: true, TorchVersion: "1.13.0"}, CauseOverhead, "reduce memory outside the allocator"},
	{"memory fraction cap: capacity", "CUDA out of memory. Tried to allocate 512.00 MiB (GPU 0; 15.78 GiB total capacity; " +
		"3.70 GiB already allocated; 10.20 GiB free; 4.00 GiB allowed; 3.80 GiB reserved in total by PyTorch)",
		cudaSample(3700*MiB, 3800*MiB, 40*MiB, 0), 1000,
		RunContext{BatchSize: 16, Microbatch: 4, UseFP16: true, TorchVersion: "1.13.0"}, CauseCapacity, "--microbatch 4 → 2"},
	// A real 1.13 message (Colab-like): 7.7 GiB of the device is used outside
	// this allocator; the 58 MiB of unusable cache is the smaller factor.
	{"1.13 device used elsewhere, no NVML", msg113Colab, cudaSample(130*MiB, 188*MiB, 40*MiB, 0), 1000,
		RunContext{BatchSize: 16, Microbatch: 4, UseFP16: true, TorchVersion: "1.13.0"}, CauseCoTenant, "free the GPU"},
	{"CUDA error without figures", msgCUDAError, cudaSample(7*GiB, 7*GiB+100*MiB, -1, 0), 1000,
		RunContext{BatchSize: 64, Microbatch: 64, TorchVersion: "2.5.1"}, CauseCapacity, "--microbatch 64 → 32"},
	{"host: cgotorch CPU limit", msgCPULimit, Sample{RSSBytes: 400 * MiB, RSSValid: true, CPUAllocValid: true, CPUTensorBytes: 12 * MiB, LiveTensors: 9}, 1000,
		RunContext{BatchSize: 32, Microbatch: 8}, CauseHost, "--microbatch 8 → 4"},
	{"host: libtorch CPU allocator", msgCPUDefault, Sample{RSSBytes: 400 * MiB, RSSValid: true, SysValid: true, SysTotalBytes: 8 * GiB, SysAvailableBytes: 100 * MiB}, 1000,
		RunContext{BatchSize: 64}, CauseHost, "--microbatch 64 → 32"},
}

func TestClassifyFixtures(t *testing.T) {
	for _, f := range oomFixtures {
		t.Run(f.name, func(t *testing.T) {
			d := Classify(ParseOOMMessage(f.msg), &f.s, f.pid)
			if d.Cause != f.cause {
				t.Fatalf("cause %q (%s), want %q", d.Cause, d.Reason, f.cause)
			}
			rs := Remedies(d, f.run)
			if len(rs) == 0 || rs[0].Action != f.firstRemedy {
				t.Fatalf("remedies %v, want first %q", rs, f.firstRemedy)
			}
			t.Logf("%s: %s; remedies %v", d.Cause, d.Reason, rs)
		})
	}
}

func TestRunContextSteps(t *testing.T) {
	cases := []struct {
		rc       RunContext
		mb, bs   int
		fromMB   int
		cutsBoth bool
	}{
		{RunContext{BatchSize: 64, Microbatch: 16}, 8, 32, 16, false},
		{RunContext{BatchSize: 32, Microbatch: 8}, 4, 16, 8, false},
		{RunContext{BatchSize: 16, Microbatch: 4}, 2, 8, 4, false},
		{RunContext{BatchSize: 8, Microbatch: 1}, 0, 4, 1, false},
		{RunContext{BatchSize: 48, Microbatch: 12}, 8, 32, 12, false},
		{RunContext{BatchSize: 64, Microbatch: -1}, 32, 32, 64, false},
		{RunContext{BatchSize: 30, Microbatch: 0}, 15, 16, 30, false},
		{RunContext{BatchSize: 12, Microbatch: 12}, 6, 8, 12, false},
		{RunContext{Microbatch: 8}, 4, 0, 8, false},
		{RunContext{BatchSize: 1024, Microbatch: 1024}, 512, 512, 1024, false},
		{RunContext{BatchSize: 100, Microbatch: 25}, 20, 50, 25, false},
		{RunContext{BatchSize: 6, Microbatch: 3}, 2, 3, 3, false},
	}
	for _, c := range cases {
		if mb, bs, from := c.rc.NextMicrobatch(), c.rc.NextBatchSize(), c.rc.effectiveMicrobatch(); mb != c.mb || bs != c.bs || from != c.fromMB {
			t.Errorf("%+v: next microbatch %d, batch %d, from %d; want %d, %d, %d", c.rc, mb, bs, from, c.mb, c.bs, c.fromMB)
		}
	}
}

func TestAllocConfRemedy(t *testing.T) {
	cases := []struct {
		rc   RunContext
		want string
	}{
		{RunContext{TorchVersion: "2.1.0"}, "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"},
		{RunContext{TorchVersion: "2.11.0+cu130", AllocConf: "max_split_size_mb:64"}, "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"},
		{RunContext{TorchVersion: "2.5.0", AllocConf: "expandable_segments:True"}, ""},
		{RunContext{TorchVersion: "1.13.0"}, "PYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:128"},
		{RunContext{TorchVersion: "1.13.0", AllocConf: "max_split_size_mb:128"}, "PYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:64"},
		{RunContext{TorchVersion: "1.13.0", AllocConf: "max_split_size_mb:32"}, ""},
	}
	for _, c := range cases {
		r, ok := allocConfRemedy(c.rc)
		if (c.want == "") == ok || (ok && r.Action != c.want) {
			t.Errorf("%+v: %v %v, want %q", c.rc, r, ok, c.want)
		}
		if ok && strings.Contains(r.Action, "expandable_segments") && strings.Contains(r.Action, "max_split_size_mb") {
			t.Errorf("both options suggested: %s", r.Action)
		}
	}
}

// TestReportLinesByteExact checks the U5–U7 lines byte for byte.
func TestReportLinesByteExact(t *testing.T) {
	f := oomFixtures[0]
	s := withNVML(f.s, 12196*MiB, 406*MiB, 11786*MiB)
	s.RSSBytes, s.PeakRSSBytes = 2048*MiB+MiB/2, 2100*MiB
	s.CUDA.AllocatedBytes, s.CUDA.PeakAllocatedBytes = 11448*MiB+MiB/4, 11500*MiB
	s.CUDA.ReservedBytes, s.CUDA.PeakReservedBytes = 11667*MiB, 11700*MiB
	s.CUDA.NumAllocRetries, s.CUDA.NumOOMs = 3, 1
	d := Classify(ParseOOMMessage(f.msg), &s, f.pid)
	rep := &OOMReport{Headline: FirstSentence(f.msg), Summary: NewMemorySummary(&s), Diagnosis: d, Remedies: Remedies(d, f.run),
		Versions: VersionInfo{Torch: "2.5.1", Flavour: "cuda", Go: "go1.26.8"}}
	lines := rep.Lines()
	want := []string{
		"❌ Memory Error: CUDA out of memory",
		"💾 Memory Summary: {'current_cpu_mb': 2048.5, 'current_gpu_mb': 11448.3, 'peak_cpu_mb': 2100.0, 'peak_gpu_mb': 11500.0, " +
			"'gpu_cached_mb': 11667.0, 'peak_gpu_cached_mb': 11700.0, 'nvml_process_gpu_mb': 11786.0, 'device_free_mb': 406.0, " +
			"'device_total_mb': 12196.0, 'num_alloc_retries': 3, 'num_ooms': 1}",
		"💡 Suggestions:",
		"   1. Reduce --batch_size",
		"   2. Increase --microbatch",
		"   3. Use --use_fp16 for half precision",
		"   4. Reduce model size",
	}
	for i, w := range want {
		if lines[i] != w {
			t.Fatalf("line %d:\n got %q\nwant %q", i, lines[i], w)
		}
	}
	if !strings.HasPrefix(lines[7], "🔎 Cause: capacity: ") || lines[8] != "🛠️ Remedies, most effective first:" ||
		!strings.HasPrefix(lines[9], "   a) --microbatch 8 → 4 (same --batch_size 32 in 8 chunks") {
		t.Fatalf("X4 lines:\n%s", strings.Join(lines[7:], "\n"))
	}
	// Without CUDA and NVML the unavailable figures print as Python's None.
	cpu := Sample{RSSBytes: 300 * MiB, RSSValid: true, PeakRSSBytes: 310 * MiB, PeakRSSValid: true, CPUAllocValid: true, CPUOOMs: 2}
	got := NewMemorySummary(&cpu).String()
	wantCPU := "{'current_cpu_mb': 300.0, 'current_gpu_mb': None, 'peak_cpu_mb': 310.0, 'peak_gpu_mb': None, 'gpu_cached_mb': None, " +
		"'peak_gpu_cached_mb': None, 'nvml_process_gpu_mb': None, 'device_free_mb': None, 'device_total_mb': None, " +
		"'num_alloc_retries': None, 'num_ooms': 2}"
	if got != wantCPU {
		t.Fatalf("CPU summary:\n got %s\nwant %s", got, wantCPU)
	}
}

// TestRemedyUsesPreflight: with the pre-flight model, the microbatch
// remedy names the largest smaller microbatch predicted to fit.
func TestRemedyUsesPreflight(t *testing.T) {
	pf, err := FitPreflight(linearPoints(100*MiB, 10*MiB, 1, 2, 4), PreflightConfig{Microbatch: 16, BatchSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	rc := RunContext{BatchSize: 64, Microbatch: 16, Preflight: &pf, UseFP16: true}
	for limit, want := range map[int64]string{
		200 * MiB: "--microbatch 16 → 8 (same --batch_size 64 in 8 chunks: the mathematics is unchanged; predicted peak 180.0 MiB of 200.0 MiB)",
		150 * MiB: "--microbatch 16 → 4 (same --batch_size 64 in 16 chunks: the mathematics is unchanged; predicted peak 140.0 MiB of 150.0 MiB)",
		50 * MiB:  "--microbatch 16 → 8 (same --batch_size 64 in 8 chunks: the mathematics is unchanged; predicted peak 180.0 MiB of 50.0 MiB)",
	} {
		rs := Remedies(Diagnosis{Cause: CauseCapacity, LimitBytes: limit}, rc)
		if got := rs[0].String(); got != want {
			t.Errorf("limit %d MiB:\n got %s\nwant %s", limit/MiB, got, want)
		}
	}
}
