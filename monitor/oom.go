package monitor

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// suggestionLines are the four fixed suggestions of the user guide (U7).
var suggestionLines = [...]string{
	"   1. Reduce --batch_size",
	"   2. Increase --microbatch",
	"   3. Use --use_fp16 for half precision",
	"   4. Reduce model size",
}

// SuggestionLines returns the four fixed suggestions of the user guide
// (U7), indented three spaces, printed verbatim after "💡 Suggestions:".
func SuggestionLines() []string { return slices.Clone(suggestionLines[:]) }

// VersionInfo identifies the software for a support request (U27).
type VersionInfo struct {
	// Program is Options.Program (trainer name and version).
	Program string `json:"program,omitempty"`
	// Go is runtime.Version().
	Go string `json:"go"`
	// Torch, Flavour and ShimABI describe the loaded libcgotorch.
	Torch   string `json:"torch"`
	Flavour string `json:"flavour"`
	ShimABI int    `json:"shim_abi"`
	// CUDA is the CUDA runtime and driver API versions of the CUDA flavour
	// ("runtime 12.4, driver API 12.6"; "" on the CPU flavour).
	CUDA string `json:"cuda,omitempty"`
	// Driver is the NVIDIA driver version from NVML ("" without NVML).
	Driver string `json:"driver,omitempty"`
	// Device and DevicePCI name the watched CUDA device.
	Device    int    `json:"device"`
	DevicePCI string `json:"device_pci,omitempty"`
}

// OOMReport is the full record of one out-of-memory error: the printed
// lines' contents plus everything a diagnosis or support request needs.
type OOMReport struct {
	Time time.Time `json:"time"`
	// Step is the last step the monitor saw.
	Step int `json:"step"`
	// Error is err.Error(); Message the full libtorch message; Headline its
	// first sentence (the U5 line).
	Error    string `json:"error"`
	Message  string `json:"message"`
	Headline string `json:"headline"`
	// Summary holds the U6 figures in order.
	Summary MemorySummary `json:"summary"`
	// Parsed is what the message states; Diagnosis the classified cause;
	// Remedies the ranked X4 remedies.
	Parsed    OOMMessage `json:"parsed"`
	Diagnosis Diagnosis  `json:"diagnosis"`
	Remedies  []Remedy   `json:"remedies"`
	// Unavailable is a note for a command that lacks flags the fixed
	// suggestions name (RunContext.Unavailable), "" otherwise.
	Unavailable string `json:"unavailable,omitempty"`
	// Sample was taken at report time, with an allocator snapshot.
	Sample   Sample      `json:"sample"`
	Run      RunContext  `json:"run"`
	Versions VersionInfo `json:"versions"`
	// AllocSettings are the CUDA caching allocator's settings as libtorch
	// parsed them (cgotorch.AllocConfReadback), or why they cannot be read.
	AllocSettings string        `json:"alloc_settings"`
	Leaks         []LeakVerdict `json:"leaks,omitempty"`
	// ReportPath is where the JSON record was written ("" if not).
	ReportPath string `json:"-"`
}

// MemorySummary is the U6 dictionary: values in MiB (2^20 bytes) or counts,
// NaN-free; a nil pointer is unavailable and prints as None.
type MemorySummary struct {
	CurrentCPUMB     *float64 `json:"current_cpu_mb"`
	CurrentGPUMB     *float64 `json:"current_gpu_mb"`
	PeakCPUMB        *float64 `json:"peak_cpu_mb"`
	PeakGPUMB        *float64 `json:"peak_gpu_mb"`
	GPUCachedMB      *float64 `json:"gpu_cached_mb"`
	PeakGPUCachedMB  *float64 `json:"peak_gpu_cached_mb"`
	NVMLProcessGPUMB *float64 `json:"nvml_process_gpu_mb"`
	DeviceFreeMB     *float64 `json:"device_free_mb"`
	DeviceTotalMB    *float64 `json:"device_total_mb"`
	NumAllocRetries  *int64   `json:"num_alloc_retries"`
	NumOOMs          *int64   `json:"num_ooms"`
}

func mbOpt(b int64, ok bool) *float64 {
	if !ok {
		return nil
	}
	v := float64(int64(mb(b)*10+0.5)) / 10
	return &v
}

// NewMemorySummary builds the U6 figures from a sample: CPU = RSS and
// VmHWM; GPU = allocator allocated/reserved current and peak; NVML process
// usage and device free/total; allocator retries and OOMs. Without CUDA,
// num_ooms is the CPU allocator's count and the GPU figures are None.
func NewMemorySummary(s *Sample) MemorySummary {
	m := MemorySummary{
		CurrentCPUMB:     mbOpt(s.RSSBytes, s.RSSValid),
		PeakCPUMB:        mbOpt(s.PeakRSSBytes, s.PeakRSSValid),
		CurrentGPUMB:     mbOpt(s.CUDA.AllocatedBytes, s.CUDAValid),
		PeakGPUMB:        mbOpt(s.CUDA.PeakAllocatedBytes, s.CUDAValid),
		GPUCachedMB:      mbOpt(s.CUDA.ReservedBytes, s.CUDAValid),
		PeakGPUCachedMB:  mbOpt(s.CUDA.PeakReservedBytes, s.CUDAValid),
		NVMLProcessGPUMB: mbOpt(s.ProcessGPUBytes, s.ProcessGPUValid),
		DeviceFreeMB:     mbOpt(s.Device.FreeBytes, s.NVMLValid),
		DeviceTotalMB:    mbOpt(s.Device.TotalBytes, s.NVMLValid),
		NumAllocRetries:  opt(s.CUDA.NumAllocRetries, s.CUDAValid),
	}
	switch {
	case s.CUDAValid:
		m.NumOOMs = opt(s.CUDA.NumOOMs, true)
	case s.CPUAllocValid:
		m.NumOOMs = opt(s.CPUOOMs, true)
	}
	return m
}

// String renders the dictionary in Python's repr shape with the fixed U6
// key order: {'current_cpu_mb': 2048.5, 'current_gpu_mb': None, ...}.
// MiB values have one decimal, counts are integers, unavailable is None.
func (m MemorySummary) String() string {
	f := func(v *float64) string {
		if v == nil {
			return "None"
		}
		return strconv.FormatFloat(*v, 'f', 1, 64)
	}
	i := func(v *int64) string {
		if v == nil {
			return "None"
		}
		return strconv.FormatInt(*v, 10)
	}
	kv := [...][2]string{
		{"current_cpu_mb", f(m.CurrentCPUMB)}, {"current_gpu_mb", f(m.CurrentGPUMB)},
		{"peak_cpu_mb", f(m.PeakCPUMB)}, {"peak_gpu_mb", f(m.PeakGPUMB)},
		{"gpu_cached_mb", f(m.GPUCachedMB)}, {"peak_gpu_cached_mb", f(m.PeakGPUCachedMB)},
		{"nvml_process_gpu_mb", f(m.NVMLProcessGPUMB)}, {"device_free_mb", f(m.DeviceFreeMB)},
		{"device_total_mb", f(m.DeviceTotalMB)}, {"num_alloc_retries", i(m.NumAllocRetries)}, {"num_ooms", i(m.NumOOMs)},
	}
	var b strings.Builder
	b.WriteByte('{')
	for j, p := range kv {
		if j > 0 {
			b.WriteString(", ")
		}
		b.WriteString("'" + p[0] + "': " + p[1])
	}
	b.WriteByte('}')
	return b.String()
}

// Lines are the printed report: the U5 error line, the U6 summary, the U7
// suggestions verbatim, then the X4 diagnosis and ranked remedies, the
// versions, and where the full record went.
func (r *OOMReport) Lines() []string {
	lines := []string{
		"❌ Memory Error: " + r.Headline,
		"💾 Memory Summary: " + r.Summary.String(),
		"💡 Suggestions:",
	}
	lines = append(lines, SuggestionLines()...)
	lines = append(lines, "🔎 Cause: "+string(r.Diagnosis.Cause)+": "+r.Diagnosis.Reason)
	if len(r.Remedies) > 0 {
		lines = append(lines, "🛠️ Remedies, most effective first:")
		for i, rm := range r.Remedies {
			lines = append(lines, fmt.Sprintf("   %c) %s", 'a'+rune(i), rm))
		}
	}
	if r.Unavailable != "" {
		lines = append(lines, "ℹ️ "+r.Unavailable)
	}
	if r.Run.AllocConf != "" || r.AllocSettings != "" {
		conf := r.Run.AllocConf
		if conf == "" {
			conf = "(unset)"
		}
		lines = append(lines, "⚙️ Allocator: configured "+conf+"; in effect: "+r.AllocSettings)
	}
	lines = append(lines, "ℹ️ "+r.Versions.Line())
	if r.ReportPath != "" {
		lines = append(lines, "📄 Full message and statistics: "+r.ReportPath)
	}
	return lines
}

// Line is the versions as one line: program (with its version and commit),
// libtorch and the shim, CUDA, the NVIDIA driver, Go and the device, the
// parts that are known.
func (v VersionInfo) Line() string {
	var parts []string
	if v.Program != "" {
		parts = append(parts, v.Program)
	}
	parts = append(parts, fmt.Sprintf("libtorch %s (%s flavour, shim ABI %d)", v.Torch, v.Flavour, v.ShimABI))
	if v.CUDA != "" {
		parts = append(parts, "CUDA "+v.CUDA)
	}
	if v.Driver != "" {
		parts = append(parts, "NVIDIA driver "+v.Driver)
	}
	parts = append(parts, v.Go)
	if v.DevicePCI != "" {
		parts = append(parts, fmt.Sprintf("cuda:%d (PCI %s)", v.Device, v.DevicePCI))
	}
	return strings.Join(parts, ", ")
}

// Fprint writes Lines to w, one per line.
func (r *OOMReport) Fprint(w io.Writer) error {
	for _, l := range r.Lines() {
		if _, err := io.WriteString(w, l+"\n"); err != nil {
			return err
		}
	}
	return nil
}
