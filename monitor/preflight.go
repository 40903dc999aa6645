package monitor

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// ProbeFunc runs one full training step (forward, backward and optimiser
// step) with the given microbatch size and returns the step's peak
// allocated bytes, or 0 to let the monitor read the allocator's peak
// itself. The monitor resets the allocator peaks before each call. The
// optimiser creates its state lazily on its first step, so the probe must
// run one untimed warm-up step before its measured one (or the first
// measurement misses the optimiser state).
type ProbeFunc func(microbatch int) (peakAllocatedBytes int64, err error)

// PreflightConfig configures the pre-flight peak prediction (memory.md X1).
// Only Microbatch is required.
type PreflightConfig struct {
	// ProbeSizes are the microbatch sizes probed; nil means {1, 2, 4}.
	// At least two distinct sizes are needed.
	ProbeSizes []int
	// Microbatch is the configured microbatch whose peak is predicted.
	Microbatch int
	// BatchSize limits the microbatch candidates to its divisors (the
	// global batch must split evenly); zero means powers of two up to 1024.
	BatchSize int
	// StaticBytes is memory the probe does not see but the run will hold,
	// e.g. EMA parameter copies created after the probe or fp32 master
	// weights (parameters, gradients and optimiser state are measured by a
	// probe that runs full steps). Zero means none.
	StaticBytes int64
	// OverheadBytes is device memory outside the allocator (CUDA context,
	// library workspaces: NVML process usage − reserved). Monitor.Preflight
	// fills it from NVML when zero; negative means none.
	OverheadBytes int64
	// ReservedRatio is the fragmentation margin, reserved/allocated at the
	// peak (≥ 1). Monitor.Preflight measures it on CUDA when zero; zero
	// elsewhere means 1.
	ReservedRatio float64
	// AvailableBytes is the memory this process can use; Monitor.Preflight
	// fills it when zero (see AvailableBytes). Zero leaves the verdict
	// "unknown".
	AvailableBytes int64
	// TargetFraction is the share of AvailableBytes that MaxMicrobatch may
	// use (X2); zero means 0.9.
	TargetFraction float64
	// BandFraction is the smallest half-width of the prediction band as a
	// share of the prediction; zero means 0.05.
	BandFraction float64
}

// PreflightPoint is one probe measurement.
type PreflightPoint struct {
	// Microbatch is the probed size; PeakAllocated the step's peak
	// allocated bytes (CUDA allocator, or cgotorch's CPU allocator).
	Microbatch    int   `json:"microbatch"`
	PeakAllocated int64 `json:"peak_allocated_bytes"`
	// PeakReserved is the allocator's peak reserved bytes, 0 if unknown.
	PeakReserved int64 `json:"peak_reserved_bytes"`
}

// Verdict is the outcome of a prediction against the available memory.
type Verdict string

// Verdicts: the band's upper end fits; the band straddles the available
// memory; the central prediction exceeds it; no available figure.
const (
	VerdictFits    Verdict = "fits"
	VerdictTight   Verdict = "tight"
	VerdictNoFit   Verdict = "does not fit"
	VerdictUnknown Verdict = "unknown"
)

// Defaults of PreflightConfig.
const (
	defaultProbeMax  = 1024 // largest power-of-two candidate without a batch size
	defaultTarget    = 0.9  // TargetFraction
	defaultBandShare = 0.05 // BandFraction
)

// PreflightResult is the fitted model and its prediction for the
// configured microbatch.
//
// Model: peak_alloc(mb) = A + B·mb is fitted by least squares to the probe
// peaks (A: parameters, gradients, optimiser state and other fixed
// tensors; B: activations per sample). The device peak is
// (peak_alloc(mb) + StaticBytes)·ReservedRatio + OverheadBytes. The band is
// ± max(BandFraction·prediction, 2·prediction standard error from the fit
// residuals).
type PreflightResult struct {
	// Points are the probe measurements.
	Points []PreflightPoint `json:"points"`
	// A and B are the fitted intercept (bytes) and slope (bytes per
	// sample); ResidualStd the residual standard deviation (0 with two
	// points).
	A           float64 `json:"a_bytes"`
	B           float64 `json:"b_bytes_per_sample"`
	ResidualStd float64 `json:"residual_std_bytes"`
	// ReservedRatio, OverheadBytes and StaticBytes are the terms added to
	// the fit (see the type's doc).
	ReservedRatio float64 `json:"reserved_ratio"`
	OverheadBytes int64   `json:"overhead_bytes"`
	StaticBytes   int64   `json:"static_bytes"`
	// Microbatch is the configured size; Predicted its device peak with
	// the band Low..High.
	Microbatch int   `json:"microbatch"`
	Predicted  int64 `json:"predicted_bytes"`
	Low        int64 `json:"low_bytes"`
	High       int64 `json:"high_bytes"`
	// AvailableBytes is the memory the prediction was judged against;
	// Verdict the outcome.
	AvailableBytes int64   `json:"available_bytes"`
	Verdict        Verdict `json:"verdict"`
	// MarginBytes is AvailableBytes − Predicted (negative: short by that much).
	MarginBytes int64 `json:"margin_bytes"`
	// MaxMicrobatch is the largest candidate whose band's upper end stays
	// within TargetFraction of AvailableBytes (0: none, or unknown).
	MaxMicrobatch int `json:"max_microbatch"`

	n, bandShare, target float64
	meanX, sxx           float64
	batch                int
}

// ErrPreflight wraps failures of the pre-flight probe and fit.
var ErrPreflight = errors.New("monitor: pre-flight")

// Predict returns the device-peak prediction for microbatch mb and its band.
func (r *PreflightResult) Predict(mb int) (pred, low, high int64) {
	x := float64(mb)
	alloc := r.A + r.B*x + float64(r.StaticBytes)
	p := alloc*r.ReservedRatio + float64(max(r.OverheadBytes, 0))
	se := 0.0
	if r.n > 2 && r.sxx > 0 {
		se = r.ResidualStd * math.Sqrt(1+1/r.n+(x-r.meanX)*(x-r.meanX)/r.sxx) * r.ReservedRatio
	}
	half := math.Max(r.bandShare*p, 2*se)
	return int64(p), int64(p - half), int64(p + half)
}

// FitPreflight fits the model to probe measurements and predicts cfg's
// microbatch against cfg.AvailableBytes (no device access: for synthetic
// statistics and for Preflight).
func FitPreflight(points []PreflightPoint, cfg PreflightConfig) (PreflightResult, error) {
	r := PreflightResult{Points: slices.Clone(points), Microbatch: cfg.Microbatch, StaticBytes: cfg.StaticBytes,
		OverheadBytes: max(cfg.OverheadBytes, 0), AvailableBytes: cfg.AvailableBytes, batch: cfg.BatchSize,
		bandShare: cfg.BandFraction, target: cfg.TargetFraction, ReservedRatio: cfg.ReservedRatio}
	if r.bandShare <= 0 {
		r.bandShare = defaultBandShare
	}
	if r.target <= 0 {
		r.target = defaultTarget
	}
	if cfg.Microbatch <= 0 {
		return r, fmt.Errorf("%w: microbatch to predict must be positive, got %d", ErrPreflight, cfg.Microbatch)
	}
	distinct := map[int]bool{}
	for _, p := range points {
		distinct[p.Microbatch] = true
	}
	if len(distinct) < 2 {
		return r, fmt.Errorf("%w: need probes at two or more microbatch sizes, got %d", ErrPreflight, len(distinct))
	}
	n := float64(len(points))
	var sx, sy float64
	for _, p := range points {
		sx += float64(p.Microbatch)
		sy += float64(p.PeakAllocated)
	}
	mx, my := sx/n, sy/n
	var sxx, sxy float64
	for _, p := range points {
		dx := float64(p.Microbatch) - mx
		sxx += dx * dx
		sxy += dx * (float64(p.PeakAllocated) - my)
	}
	r.B = sxy / sxx
	r.A = my - r.B*mx
	r.n, r.meanX, r.sxx = n, mx, sxx
	if len(points) > 2 {
		var ssr float64
		for _, p := range points {
			e := float64(p.PeakAllocated) - (r.A + r.B*float64(p.Microbatch))
			ssr += e * e
		}
		r.ResidualStd = math.Sqrt(ssr / (n - 2))
	}
	if r.ReservedRatio <= 0 {
		r.ReservedRatio = 1
		for _, p := range points {
			if p.PeakReserved > 0 && p.PeakAllocated > 0 {
				r.ReservedRatio = math.Max(r.ReservedRatio, float64(p.PeakReserved)/float64(p.PeakAllocated))
			}
		}
	}
	r.Predicted, r.Low, r.High = r.Predict(cfg.Microbatch)
	r.Verdict, r.MarginBytes = VerdictUnknown, 0
	if r.AvailableBytes > 0 {
		r.MarginBytes = r.AvailableBytes - r.Predicted
		switch {
		case r.High <= r.AvailableBytes:
			r.Verdict = VerdictFits
		case r.Predicted <= r.AvailableBytes:
			r.Verdict = VerdictTight
		default:
			r.Verdict = VerdictNoFit
		}
		r.MaxMicrobatch = r.LargestMicrobatch(int64(r.target * float64(r.AvailableBytes)))
	}
	return r, nil
}

// Candidates are the microbatch sizes considered: the divisors of the batch
// size, or powers of two up to 1024 without one.
func (r *PreflightResult) Candidates() []int {
	var c []int
	if r.batch > 0 {
		for d := 1; d <= r.batch; d++ {
			if r.batch%d == 0 {
				c = append(c, d)
			}
		}
		return c
	}
	for d := 1; d <= defaultProbeMax; d *= 2 {
		c = append(c, d)
	}
	return c
}

// LargestMicrobatch is the largest candidate whose band's upper end is at
// most budget bytes, 0 if none is.
func (r *PreflightResult) LargestMicrobatch(budget int64) int {
	best := 0
	for _, mb := range r.Candidates() {
		if _, _, hi := r.Predict(mb); hi <= budget {
			best = mb
		}
	}
	return best
}

// Line summarises the result for the log, e.g.
//
//	Pre-flight: microbatch 16 → predicted peak 9.1 GiB (8.6–9.6) of 11.7 GiB available: fits (margin 2.6 GiB); largest microbatch within 90%: 16
func (r *PreflightResult) Line() string {
	s := fmt.Sprintf("Pre-flight: microbatch %d → predicted peak %s (%s–%s)", r.Microbatch, fmtSize(r.Predicted), fmtSize(r.Low), fmtSize(r.High))
	if r.Verdict == VerdictUnknown {
		return s + ": available memory unknown"
	}
	s += fmt.Sprintf(" of %s available: %s", fmtSize(r.AvailableBytes), r.Verdict)
	if r.MarginBytes >= 0 {
		s += fmt.Sprintf(" (margin %s)", fmtSize(r.MarginBytes))
	} else {
		s += fmt.Sprintf(" (short by %s)", fmtSize(-r.MarginBytes))
	}
	if r.MaxMicrobatch > 0 {
		s += fmt.Sprintf("; largest microbatch within %.0f%%: %d", r.target*100, r.MaxMicrobatch)
	} else {
		s += fmt.Sprintf("; no microbatch fits within %.0f%%", r.target*100)
	}
	return s
}

// RunProbes calls probe at each size (defaults {1, 2, 4}) and returns the
// points; before each call it runs reset (if not nil), and after it read
// (if not nil) supplies the allocator's peaks, used when the probe returns
// 0 and for PeakReserved.
func RunProbes(probe ProbeFunc, sizes []int, reset func(), read func() (peakAlloc, peakReserved int64)) ([]PreflightPoint, error) {
	if len(sizes) == 0 {
		sizes = []int{1, 2, 4}
	}
	pts := make([]PreflightPoint, 0, len(sizes))
	for _, mb := range sizes {
		if reset != nil {
			reset()
		}
		peak, err := probe(mb)
		if err != nil {
			return pts, fmt.Errorf("%w: probe at microbatch %d: %w", ErrPreflight, mb, err)
		}
		var pa, pr int64
		if read != nil {
			pa, pr = read()
		}
		if peak <= 0 {
			peak = pa
		}
		if peak <= 0 {
			return pts, fmt.Errorf("%w: probe at microbatch %d reported no peak", ErrPreflight, mb)
		}
		pts = append(pts, PreflightPoint{Microbatch: mb, PeakAllocated: peak, PeakReserved: pr})
	}
	return pts, nil
}

// AvailableBytes is the memory this process can use, from a sample:
//
//   - CUDA with NVML: device free + this process's NVML usage (what it
//     already holds is reusable by it); without the process entry, free +
//     reserved. Other processes' usage is excluded because it is not free.
//   - CUDA without NVML: 0 (unknown; use cgotorch.CUDAMemGetInfo).
//   - CPU: host available + the CPU allocator's bytes, capped by the
//     cgroup limit less non-tensor RSS and by cgotorch's CPU allocation
//     limit when set.
//
// margin is subtracted (clamped at 0).
func AvailableBytes(s *Sample, margin int64) int64 {
	var a int64
	switch {
	case s.CUDAValid && s.NVMLValid:
		if s.ProcessGPUValid {
			a = s.Device.FreeBytes + s.ProcessGPUBytes
		} else {
			a = s.Device.FreeBytes + s.CUDA.ReservedBytes
		}
	case s.CUDAValid:
		return 0
	default:
		a = math.MaxInt64
		if s.SysValid {
			a = s.SysAvailableBytes + max(s.CPUTensorBytes, 0)
		}
		if s.CgroupLimited && s.RSSValid {
			a = min(a, s.CgroupLimitBytes-(s.RSSBytes-s.CPUTensorBytes))
		}
		if s.CPUAllocValid && s.CPUAllocLimitBytes > 0 {
			a = min(a, s.CPUAllocLimitBytes)
		}
		if a == math.MaxInt64 {
			return 0
		}
	}
	return max(a-margin, 0)
}
