package monitor

import (
	"fmt"
	"math"
)

// LeakConfig configures slope-based leak detection (memory.md X3). The zero
// value gives the defaults documented on each field.
type LeakConfig struct {
	// Disabled turns leak detection off.
	Disabled bool
	// Window is the long sliding window in samples; zero means 200.
	Window int
	// ShortWindow is a second, recent window that catches growth starting
	// late in a run within about ShortWindow samples; zero means 50,
	// negative disables it.
	ShortWindow int
	// MinSamples is the number of post-warm-up samples before the first
	// test; zero means 20.
	MinSamples int
	// WarmupSteps: samples before this step are ignored; zero means 2000
	// (M3), negative means no step criterion.
	WarmupSteps int
	// StableSteps: with CUDA, warm-up also lasts until reserved memory has
	// not grown for this many steps (M3); zero means 1000, negative disables.
	StableSteps int
	// BytesThreshold is the alarm threshold for byte series (RSS, CPU tensor
	// bytes, CUDA allocated) in bytes per 1000 steps; zero means 1 MiB.
	BytesThreshold float64
	// HandlesThreshold is the threshold for live tensor handles per 1000
	// steps; zero means any upward trend (the lower bound must exceed 0).
	HandlesThreshold float64
	// Confidence is the two-sided level of the slope interval whose lower
	// bound is compared with the threshold; zero means 0.999 (the test runs
	// on every sample, so a stricter level keeps false alarms rare).
	Confidence float64
	// Persist is how many consecutive tests must exceed the threshold
	// before the alarm is raised; zero means 2.
	Persist int
	// EvalEvery runs the test every EvalEvery samples (the Theil–Sen test
	// costs O(Window²)); zero means every sample when samples are at least
	// 100 steps apart, otherwise about once per 100 steps.
	EvalEvery int
}

func (c LeakConfig) withDefaults(sampleEvery int) LeakConfig {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.Window, 200)
	def(&c.ShortWindow, 50)
	def(&c.MinSamples, 20)
	def(&c.WarmupSteps, 2000)
	def(&c.StableSteps, 1000)
	def(&c.Persist, 2)
	if c.EvalEvery == 0 {
		c.EvalEvery = 1
		if sampleEvery > 0 && sampleEvery < 100 {
			c.EvalEvery = 100 / sampleEvery
		}
	}
	if c.BytesThreshold == 0 {
		c.BytesThreshold = MiB
	}
	if c.Confidence == 0 {
		c.Confidence = 0.999
	}
	if c.Window < 3 {
		c.Window = 3
	}
	if c.ShortWindow >= c.Window {
		c.ShortWindow = -1
	}
	if c.MinSamples < 3 {
		c.MinSamples = 3
	}
	return c
}

// The series the leak detector watches.
const (
	SeriesRSS          = "rss"
	SeriesCPUTensors   = "cpu_tensor_bytes"
	SeriesGPUAllocated = "gpu_allocated_bytes"
	SeriesLiveHandles  = "live_tensors"
)

// LeakVerdict is the latest test of one series.
type LeakVerdict struct {
	// Series is one of the Series* names.
	Series string `json:"series"`
	// Samples is the number of points in the tested window; FirstStep and
	// LastStep its extent.
	Samples   int `json:"samples"`
	FirstStep int `json:"first_step"`
	LastStep  int `json:"last_step"`
	// Window is "long" or "short", the window whose test is reported.
	Window string `json:"window"`
	// Slope, Lower and Upper are the Theil–Sen slope and its confidence
	// interval in units (bytes or handles) per 1000 steps.
	Slope float64 `json:"slope_per_1000_steps"`
	Lower float64 `json:"lower_per_1000_steps"`
	Upper float64 `json:"upper_per_1000_steps"`
	// Threshold is the alarm threshold per 1000 steps.
	Threshold float64 `json:"threshold_per_1000_steps"`
	// Alarm is set while the lower bound has exceeded the threshold for
	// Persist consecutive tests; AlarmStep is the step it was first raised
	// (0 if never) and Alarms counts how often it was raised.
	Alarm     bool `json:"alarm"`
	AlarmStep int  `json:"alarm_step"`
	Alarms    int  `json:"alarms"`
	// Tested is false until the series has MinSamples post-warm-up samples.
	Tested bool `json:"tested"`
}

// Line formats an alarm as the warning line the monitor prints:
//
//	⚠️ Memory leak suspected: RSS rising 10.1 MiB per 1000 steps (99.9% CI 7.6 to 10.4, threshold 1.0) over steps 500-2500 (21 samples)
//
// Byte series are in MiB, handles in handles; confidence is the level of
// the interval (LeakConfig.Confidence).
func (v LeakVerdict) Line(confidence float64) string {
	name, unit, scale := seriesLabel(v.Series)
	return fmt.Sprintf("⚠️ Memory leak suspected: %s rising %.1f%s per 1000 steps (%g%% CI %.1f to %.1f, threshold %.1f) over steps %d-%d (%d samples)",
		name, v.Slope/scale, unit, confidence*100, v.Lower/scale, v.Upper/scale, v.Threshold/scale, v.FirstStep, v.LastStep, v.Samples)
}

func seriesLabel(series string) (name, unit string, scale float64) {
	switch series {
	case SeriesRSS:
		return "RSS", " MiB", MiB
	case SeriesCPUTensors:
		return "CPU tensor memory", " MiB", MiB
	case SeriesGPUAllocated:
		return "GPU allocated memory", " MiB", MiB
	case SeriesLiveHandles:
		return "live tensor handles", "", 1
	}
	return series, "", 1
}

// trend is one watched series: a ring of (step, value) points and its state.
type trend struct {
	name      string
	threshold float64 // per step
	xs, ys    []float64
	head, n   int
	streak    int
	verdict   LeakVerdict // alarm state; figures of the last raised alarm
}

func (t *trend) add(step int, v float64) {
	t.xs[t.head], t.ys[t.head] = float64(step), v
	t.head = (t.head + 1) % len(t.xs)
	if t.n < len(t.xs) {
		t.n++
	}
}

// last copies the most recent k points, oldest first, into x and y.
func (t *trend) last(k int, x, y []float64) ([]float64, []float64) {
	x, y = x[:0], y[:0]
	start := (t.head - k + len(t.xs)) % len(t.xs)
	for i := 0; i < k; i++ {
		j := (start + i) % len(t.xs)
		x = append(x, t.xs[j])
		y = append(y, t.ys[j])
	}
	return x, y
}

// LeakDetector tests RSS, CPU tensor bytes, CUDA allocated bytes and live
// tensor handles for sustained growth (memory.md X3): after warm-up it keeps
// the last Window samples of each, computes the Theil–Sen slope over steps
// with a rank-based confidence interval, and raises an alarm when the
// interval's lower bound exceeds the threshold in Persist consecutive tests,
// in the long window or the recent short one. Its memory is fixed.
type LeakDetector struct {
	cfg           LeakConfig
	trends        []*trend
	warm          bool
	maxReserved   int64
	lastGrowth    int
	sawCUDA       bool
	samples       int
	x, y, scratch []float64
}

// NewLeakDetector returns a detector; sampleEvery (steps between samples)
// only sets the default EvalEvery.
func NewLeakDetector(cfg LeakConfig, sampleEvery int) *LeakDetector {
	cfg = cfg.withDefaults(sampleEvery)
	d := &LeakDetector{cfg: cfg, lastGrowth: math.MinInt / 2}
	mk := func(name string, perKilo float64) *trend {
		return &trend{name: name, threshold: perKilo / 1000, xs: make([]float64, cfg.Window), ys: make([]float64, cfg.Window),
			verdict: LeakVerdict{Series: name, Threshold: perKilo}}
	}
	d.trends = []*trend{
		mk(SeriesRSS, cfg.BytesThreshold),
		mk(SeriesCPUTensors, cfg.BytesThreshold),
		mk(SeriesGPUAllocated, cfg.BytesThreshold),
		mk(SeriesLiveHandles, cfg.HandlesThreshold),
	}
	d.x = make([]float64, 0, cfg.Window)
	d.y = make([]float64, 0, cfg.Window)
	return d
}

// Config is the detector's configuration with defaults applied.
func (d *LeakDetector) Config() LeakConfig { return d.cfg }

// Warm reports whether warm-up has ended.
func (d *LeakDetector) Warm() bool { return d.warm }

// Observe feeds one sample and returns the verdicts whose alarm was raised
// by this sample (empty almost always).
func (d *LeakDetector) Observe(s *Sample) []LeakVerdict {
	if d.cfg.Disabled {
		return nil
	}
	if s.CUDAValid {
		d.sawCUDA = true
		if s.CUDA.ReservedBytes > d.maxReserved {
			d.maxReserved, d.lastGrowth = s.CUDA.ReservedBytes, s.Step
		}
	}
	if !d.warm {
		stepOK := d.cfg.WarmupSteps < 0 || s.Step >= d.cfg.WarmupSteps
		stableOK := !d.sawCUDA || d.cfg.StableSteps < 0 || s.Step-d.lastGrowth >= d.cfg.StableSteps
		if !stepOK || !stableOK {
			return nil
		}
		d.warm = true
	}
	vals := [...]struct {
		v  int64
		ok bool
	}{
		{s.RSSBytes, s.RSSValid},
		{s.CPUTensorBytes, s.CPUAllocValid},
		{s.CUDA.AllocatedBytes, s.CUDAValid},
		{s.LiveTensors, true},
	}
	d.samples++
	eval := d.samples%d.cfg.EvalEvery == 0
	var raised []LeakVerdict
	for i, t := range d.trends {
		if !vals[i].ok {
			continue
		}
		t.add(s.Step, float64(vals[i].v))
		if eval && d.test(t) {
			raised = append(raised, t.verdict)
		}
	}
	return raised
}

// windows lists the window lengths tested for a series holding n points.
func (d *LeakDetector) windows(n int) [2]int {
	w := [2]int{n, 0}
	if d.cfg.ShortWindow > 0 && n > d.cfg.ShortWindow {
		w[1] = d.cfg.ShortWindow
	}
	return w
}

// test runs the slope test on t and reports whether an alarm was raised now.
// The test itself only counts pairwise slopes (lowerBoundExceeds); the full
// estimate is computed when an alarm is raised, for the warning line.
func (d *LeakDetector) test(t *trend) bool {
	if t.n < d.cfg.MinSamples {
		return false
	}
	t.verdict.Tested = true
	over := 0 // window length that exceeded, 0 if none
	for _, k := range d.windows(t.n) {
		if k == 0 {
			continue
		}
		d.x, d.y = t.last(k, d.x, d.y)
		var ex bool
		ex, d.scratch = lowerBoundExceeds(d.x, d.y, d.cfg.Confidence, t.threshold, d.scratch)
		if ex {
			over = k
			break
		}
	}
	if over == 0 {
		t.streak = 0
		t.verdict.Alarm = false
		return false
	}
	t.streak++
	if t.streak < d.cfg.Persist || t.verdict.Alarm {
		return false
	}
	v := d.estimate(t, over)
	v.Alarm, v.Alarms, v.AlarmStep = true, t.verdict.Alarms+1, t.verdict.AlarmStep
	if v.AlarmStep == 0 {
		v.AlarmStep = v.LastStep
	}
	t.verdict = v
	return true
}

// estimate computes the full Theil–Sen verdict over the last k points of t.
func (d *LeakDetector) estimate(t *trend, k int) LeakVerdict {
	d.x, d.y = t.last(k, d.x, d.y)
	var est SlopeEstimate
	est, d.scratch = TheilSen(d.x, d.y, d.cfg.Confidence, d.scratch)
	w := "long"
	if k < t.n {
		w = "short"
	}
	return LeakVerdict{Series: t.name, Samples: k, FirstStep: int(d.x[0]), LastStep: int(d.x[k-1]), Window: w,
		Slope: est.Slope * 1000, Lower: est.Lower * 1000, Upper: est.Upper * 1000, Threshold: t.threshold * 1000, Tested: true}
}

// Verdicts returns the current verdict of every series that has
// post-warm-up data: the full estimate over the long window (or, while an
// alarm stands, over the window that raised it), with the alarm state.
// It costs O(Window²) per series; call it for summaries, not every step.
func (d *LeakDetector) Verdicts() []LeakVerdict {
	var out []LeakVerdict
	for _, t := range d.trends {
		if t.n == 0 {
			continue
		}
		if t.n < 3 {
			out = append(out, LeakVerdict{Series: t.name, Samples: t.n, Threshold: t.threshold * 1000,
				Slope: math.NaN(), Lower: math.Inf(-1), Upper: math.Inf(1)})
			continue
		}
		k := t.n
		if t.verdict.Alarm && t.verdict.Window == "short" {
			k = min(t.verdict.Samples, t.n)
		}
		v := d.estimate(t, k)
		v.Tested = t.verdict.Tested
		v.Alarm, v.Alarms, v.AlarmStep = t.verdict.Alarm, t.verdict.Alarms, t.verdict.AlarmStep
		out = append(out, v)
	}
	return out
}
