package monitor

import (
	"bufio"
	"encoding/json"
	"os"
	"strconv"
	"time"
)

// StepLine formats the user guide's per-step memory line (memory.md U3):
//
//	Step 1000: CPU: 2048.5MB, GPU: 4096.2MB, GPU Cached: 1024.1MB
//
// CPU is the process RSS, GPU the caching allocator's allocated bytes and
// GPU Cached its reserved bytes (A1), in MiB with one decimal. With
// freeCache, ", GPU Free Cache: X.XMB" (reserved − allocated) is appended.
//
// Without CUDA the GPU fields are absent, and the bytes held by cgotorch's
// CPU allocator (host tensors) follow in their own field when known:
//
//	Step 1000: CPU: 2048.5MB, CPU Tensors: 512.3MB
//
// An unreadable RSS prints as "CPU: n/a". The line has no trailing newline.
func StepLine(s *Sample, freeCache bool) string {
	b := make([]byte, 0, 96)
	b = append(b, "Step "...)
	b = strconv.AppendInt(b, int64(s.Step), 10)
	b = append(b, ": CPU: "...)
	if s.RSSValid {
		b = append(b, fmtMB(s.RSSBytes)...)
	} else {
		b = append(b, "n/a"...)
	}
	if s.CUDAValid {
		b = append(b, ", GPU: "...)
		b = append(b, fmtMB(s.CUDA.AllocatedBytes)...)
		b = append(b, ", GPU Cached: "...)
		b = append(b, fmtMB(s.CUDA.ReservedBytes)...)
		if freeCache {
			b = append(b, ", GPU Free Cache: "...)
			b = append(b, fmtMB(s.CUDA.ReservedBytes-s.CUDA.AllocatedBytes)...)
		}
	} else if s.CPUAllocValid {
		b = append(b, ", CPU Tensors: "...)
		b = append(b, fmtMB(s.CPUTensorBytes)...)
	}
	return string(b)
}

// sampleRecord is the JSON form of a Sample: one object per line in the
// series file. Invalid figures are null, never 0.
type sampleRecord struct {
	Step int    `json:"step"`
	Time string `json:"time"`

	RSSBytes          *int64 `json:"rss_bytes"`
	PeakRSSBytes      *int64 `json:"peak_rss_bytes"`
	SysTotalBytes     *int64 `json:"sys_total_bytes"`
	SysAvailableBytes *int64 `json:"sys_available_bytes"`
	CgroupLimitBytes  *int64 `json:"cgroup_limit_bytes"`

	LiveTensors        int64  `json:"live_tensors"`
	CPUTensorBytes     *int64 `json:"cpu_tensor_bytes"`
	CPUTensorPeakBytes *int64 `json:"cpu_tensor_peak_bytes"`
	CPUOOMs            *int64 `json:"cpu_ooms"`
	CPUAllocLimitBytes *int64 `json:"cpu_alloc_limit_bytes"`

	GPUAllocatedBytes         *int64 `json:"gpu_allocated_bytes"`
	GPUAllocatedPeakBytes     *int64 `json:"gpu_allocated_peak_bytes"`
	GPUReservedBytes          *int64 `json:"gpu_reserved_bytes"`
	GPUReservedPeakBytes      *int64 `json:"gpu_reserved_peak_bytes"`
	GPUActiveBytes            *int64 `json:"gpu_active_bytes"`
	GPUActivePeakBytes        *int64 `json:"gpu_active_peak_bytes"`
	GPUInactiveSplitBytes     *int64 `json:"gpu_inactive_split_bytes"`
	GPUInactiveSplitPeakBytes *int64 `json:"gpu_inactive_split_peak_bytes"`
	GPUNumAllocRetries        *int64 `json:"gpu_num_alloc_retries"`
	GPUNumOOMs                *int64 `json:"gpu_num_ooms"`

	NVMLMemoryVersion   *int         `json:"nvml_memory_version"`
	DeviceTotalBytes    *int64       `json:"device_total_bytes"`
	DeviceFreeBytes     *int64       `json:"device_free_bytes"`
	DeviceUsedBytes     *int64       `json:"device_used_bytes"`
	DeviceReservedBytes *int64       `json:"device_reserved_bytes"`
	ProcessGPUBytes     *int64       `json:"process_gpu_bytes"`
	OtherProcesses      []GPUProcess `json:"other_processes"`
	OtherProcessesBytes *int64       `json:"other_processes_bytes"`
}

func opt(v int64, ok bool) *int64 {
	if !ok {
		return nil
	}
	return &v
}

func newSampleRecord(s *Sample) sampleRecord {
	r := sampleRecord{
		Step: s.Step, Time: s.Time.UTC().Format(time.RFC3339Nano),
		RSSBytes: opt(s.RSSBytes, s.RSSValid), PeakRSSBytes: opt(s.PeakRSSBytes, s.PeakRSSValid),
		SysTotalBytes: opt(s.SysTotalBytes, s.SysValid), SysAvailableBytes: opt(s.SysAvailableBytes, s.SysValid),
		CgroupLimitBytes: opt(s.CgroupLimitBytes, s.CgroupLimited),
		LiveTensors:      s.LiveTensors,
		CPUTensorBytes:   opt(s.CPUTensorBytes, s.CPUAllocValid), CPUTensorPeakBytes: opt(s.CPUTensorPeakBytes, s.CPUAllocValid),
		CPUOOMs: opt(s.CPUOOMs, s.CPUAllocValid), CPUAllocLimitBytes: opt(s.CPUAllocLimitBytes, s.CPUAllocValid),
	}
	if c, ok := s.CUDA, s.CUDAValid; ok {
		r.GPUAllocatedBytes, r.GPUAllocatedPeakBytes = &c.AllocatedBytes, &c.PeakAllocatedBytes
		r.GPUReservedBytes, r.GPUReservedPeakBytes = &c.ReservedBytes, &c.PeakReservedBytes
		r.GPUActiveBytes, r.GPUActivePeakBytes = &c.ActiveBytes, &c.PeakActiveBytes
		r.GPUInactiveSplitBytes, r.GPUInactiveSplitPeakBytes = &c.InactiveSplitBytes, &c.PeakInactiveSplitBytes
		r.GPUNumAllocRetries, r.GPUNumOOMs = &c.NumAllocRetries, &c.NumOOMs
	}
	if d, ok := s.Device, s.NVMLValid; ok {
		v := d.Version
		r.NVMLMemoryVersion = &v
		r.DeviceTotalBytes, r.DeviceFreeBytes, r.DeviceUsedBytes = &d.TotalBytes, &d.FreeBytes, &d.UsedBytes
		r.DeviceReservedBytes = opt(d.ReservedBytes, d.Version == 2)
		r.OtherProcesses = s.OtherProcesses
		if r.OtherProcesses == nil {
			r.OtherProcesses = []GPUProcess{}
		}
		r.OtherProcessesBytes = opt(s.OtherProcessesBytes, true)
	}
	r.ProcessGPUBytes = opt(s.ProcessGPUBytes, s.ProcessGPUValid)
	return r
}

// MarshalJSON writes the sample as its series record: snake_case keys,
// bytes as integers, null for every figure that is not valid.
func (s Sample) MarshalJSON() ([]byte, error) { return json.Marshal(newSampleRecord(&s)) }

// seriesWriter appends one JSON object per sample to a file (JSON Lines),
// flushing after each so that a crash loses nothing. Its first error sticks
// and is returned by close.
type seriesWriter struct {
	f   *os.File
	w   *bufio.Writer
	err error
}

func (sw *seriesWriter) write(s *Sample) {
	if sw == nil || sw.err != nil {
		return
	}
	b, err := json.Marshal(newSampleRecord(s))
	if err == nil {
		b = append(b, '\n')
		_, err = sw.w.Write(b)
	}
	if err == nil {
		err = sw.w.Flush()
	}
	sw.err = err
}

func (sw *seriesWriter) close() error {
	if sw == nil || sw.f == nil {
		return nil
	}
	err := sw.err
	if e := sw.w.Flush(); err == nil {
		err = e
	}
	if e := sw.f.Close(); err == nil {
		err = e
	}
	sw.f = nil
	return err
}
