package monitor

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/scdiffusion/gotorch-train/cgotorch"
)

// OOMError is returned by Guard when the training function ran out of
// memory. It unwraps to the original error, so errors.Is(err,
// cgotorch.ErrOutOfMemory) holds, and carries the report.
type OOMError struct {
	// Report is the printed report's record.
	Report *OOMReport
	// Err is the original error (a *cgotorch.Error for libtorch OOMs).
	Err error
}

// Error is "out of memory: " followed by the report's headline.
func (e *OOMError) Error() string {
	if e.Report != nil {
		return "monitor: out of memory (" + string(e.Report.Diagnosis.Cause) + "): " + e.Report.Headline
	}
	return "monitor: out of memory: " + e.Err.Error()
}

// Unwrap returns the original error (a *cgotorch.Error for libtorch OOMs).
func (e *OOMError) Unwrap() error { return e.Err }

// Guard runs a training function under the memory handling of the user
// guide's wrapper (U24). A returned error that is an out-of-memory error
// (errors.Is(err, cgotorch.ErrOutOfMemory)), or a panic carrying one (a
// *cgotorch.Error with the OOM code, as tensor math panics), is turned into
// the printed report (ReportOOM), followed by a cleanup (CleanupMemory),
// and returned as *OOMError so main can exit non-zero. Other errors are
// returned unchanged; a panic with any other *cgotorch.Error is returned as
// that error (as cgotorch.Try does); other panics propagate. An *OOMError
// from a nested Guard is passed through without a second report.
func (m *Monitor) Guard(fn func() error) error {
	err := runRecovering(fn)
	if err == nil {
		return nil
	}
	var already *OOMError
	if errors.As(err, &already) || !errors.Is(err, cgotorch.ErrOutOfMemory) {
		return err
	}
	rep := m.ReportOOM(err)
	m.CleanupMemory()
	return &OOMError{Report: rep, Err: err}
}

// runRecovering calls fn, converting a panic with a *cgotorch.Error (or an
// error wrapping an out-of-memory error) into a returned error.
func runRecovering(fn func() error) (err error) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		var ce *cgotorch.Error
		if e, ok := r.(error); ok && (errors.As(e, &ce) || errors.Is(e, cgotorch.ErrOutOfMemory)) {
			err = e
			return
		}
		panic(r)
	}()
	return fn()
}

// ReportOOM prints the out-of-memory report for err (U5–U7, then X4) and
// returns it: the headline (first sentence of libtorch's message), the U6
// summary, the four suggestions verbatim, the classified cause, ranked
// remedies computed from the RunContext, and the versions. With ReportPath
// set, the full record (whole message, parsed figures, allocator snapshot
// summary, NVML process table, leak verdicts) is also written as JSON.
func (m *Monitor) ReportOOM(err error) *OOMReport {
	m.ooms++
	msg := err.Error()
	var ce *cgotorch.Error
	if errors.As(err, &ce) && ce.Msg != "" {
		msg = ce.Msg
	}
	s := m.sp.sample(m.lastStep, true)
	rc := m.opts.Run
	if rc.TorchVersion == "" {
		rc.TorchVersion = m.build.TorchVersion
	}
	if rc.AllocConf == "" {
		rc.AllocConf = EffectiveAllocConf()
	}
	parsed := ParseOOMMessage(msg)
	diag := Classify(parsed, &s, m.sp.pid)
	rep := &OOMReport{
		Time: s.Time, Step: m.lastStep, Error: err.Error(), Message: msg, Headline: FirstSentence(msg),
		Summary: NewMemorySummary(&s), Parsed: parsed, Diagnosis: diag, Remedies: Remedies(diag, rc),
		Sample: s, Run: rc, Versions: m.versions(), Unavailable: rc.unavailableNote(), AllocSettings: allocSettings(),
	}
	if m.leak.Warm() {
		rep.Leaks = m.leak.Verdicts()
	}
	if m.opts.ReportPath != "" {
		path := freeReportPath(m.opts.ReportPath, m.ooms)
		if b, jerr := json.MarshalIndent(rep, "", "  "); jerr != nil {
			m.println("⚠️ OOM report not written: " + jerr.Error())
		} else if werr := writeFileAtomic(path, append(b, '\n')); werr != nil {
			m.println("⚠️ OOM report not written: " + werr.Error())
		} else {
			rep.ReportPath = path
		}
	}
	for _, l := range rep.Lines() {
		m.println(l)
	}
	return rep
}

// allocSettings is the CUDA caching allocator's configuration as libtorch
// parsed it, or why it cannot be read.
func allocSettings() string {
	text, _, err := cgotorch.AllocConfReadback()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return text
}

// numberedPath returns path for n == 1 and name-n.ext after that.
func numberedPath(path string, n int) string {
	if n <= 1 {
		return path
	}
	ext := filepath.Ext(path)
	return strings.TrimSuffix(path, ext) + "-" + strconv.Itoa(n) + ext
}

// Preflight predicts the run's peak memory before training (X1): it runs
// probe at cfg.ProbeSizes with the allocator's peaks reset before each call
// (CUDA: CUDAResetPeakStats; CPU: cgotorch.ResetCPUPeak), fits the linear
// model, fills what cfg leaves zero from a fresh sample (available memory
// per AvailableBytes, NVML non-allocator overhead on CUDA, the measured
// reserved/allocated ratio), prints the result's Line and returns it.
func (m *Monitor) Preflight(probe ProbeFunc, cfg PreflightConfig) (PreflightResult, error) {
	reset := func() {
		if m.sp.cuda {
			_ = cgotorch.CUDAResetPeakStats(m.sp.device)
		} else {
			cgotorch.ResetCPUPeak()
		}
	}
	read := func() (int64, int64) {
		if m.sp.cuda {
			if st, err := cgotorch.CUDAMemoryStats(m.sp.device, false); err == nil {
				return st.PeakAllocatedBytes, st.PeakReservedBytes
			}
			return 0, 0
		}
		c := cgotorch.CPUAllocatorStats()
		return c.PeakAllocatedBytes, 0
	}
	pts, err := RunProbes(probe, cfg.ProbeSizes, reset, read)
	if err != nil {
		return PreflightResult{Points: pts}, err
	}
	s := m.sp.sample(m.lastStep, false)
	if cfg.OverheadBytes == 0 {
		if oh, ok := s.NonAllocatorBytes(); ok {
			cfg.OverheadBytes = max(oh, 0)
		}
	}
	if cfg.AvailableBytes == 0 {
		cfg.AvailableBytes = AvailableBytes(&s, 0)
		if cfg.AvailableBytes == 0 && m.sp.cuda {
			if free, _, err := cgotorch.CUDAMemGetInfo(m.sp.device); err == nil && s.CUDAValid {
				cfg.AvailableBytes = free + s.CUDA.ReservedBytes
			}
		}
	}
	res, err := FitPreflight(pts, cfg)
	if err != nil {
		return res, err
	}
	m.println(res.Line())
	return res, nil
}

// ChooseMicrobatch picks the largest microbatch whose predicted peak stays
// within target (0 means 0.9) of the memory available now (X2): NVML free
// memory plus what this process holds, so co-tenants that appeared or left
// since the last choice are accounted for. It returns 0 if none fits or
// the available memory is unknown.
func ChooseMicrobatch(pf *PreflightResult, s *Sample, target float64) int {
	if target <= 0 {
		target = defaultTarget
	}
	avail := AvailableBytes(s, 0)
	if avail <= 0 {
		return 0
	}
	return pf.LargestMicrobatch(int64(target * float64(avail)))
}

// ChooseMicrobatch is the package function on a fresh sample; when the
// choice differs from current it prints one line saying why.
func (m *Monitor) ChooseMicrobatch(pf *PreflightResult, current int, target float64) int {
	s := m.sp.sample(m.lastStep, false)
	mb := ChooseMicrobatch(pf, &s, target)
	if mb != current && mb > 0 {
		m.println(fmt.Sprintf("Microbatch %d → %d: %s available now (%s in other processes)", current, mb,
			fmtSize(AvailableBytes(&s, 0)), fmtSize(s.OtherProcessesBytes)))
	}
	return mb
}

// MarshalJSON writes non-finite slopes and bounds as null.
func (v LeakVerdict) MarshalJSON() ([]byte, error) {
	type plain LeakVerdict
	f := func(x float64) *float64 {
		if isFinite(x) {
			return &x
		}
		return nil
	}
	return json.Marshal(struct {
		plain
		Slope *float64 `json:"slope_per_1000_steps"`
		Lower *float64 `json:"lower_per_1000_steps"`
		Upper *float64 `json:"upper_per_1000_steps"`
	}{plain(v), f(v.Slope), f(v.Lower), f(v.Upper)})
}

func isFinite(x float64) bool { return x-x == 0 }
