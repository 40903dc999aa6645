package monitor

import (
	"bytes"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/scdiffusion/gotorch-train/cgotorch"
)

func TestTheilSenKnownSlope(t *testing.T) {
	x := make([]float64, 50)
	y := make([]float64, 50)
	for i := range x {
		x[i] = float64(i * 100)
		y[i] = 3*x[i] + 7
	}
	est, _ := TheilSen(x, y, 0.99, nil)
	if est.Slope != 3 || est.Lower != 3 || est.Upper != 3 || est.Pairs != 1225 {
		t.Fatalf("exact line: %+v", est)
	}
	// 20 % gross outliers do not move the median slope much.
	r := rand.New(rand.NewPCG(1, 1))
	for i := range y {
		y[i] = 2 * x[i]
		if r.IntN(5) == 0 {
			y[i] += 1e6 * r.NormFloat64()
		}
	}
	est, _ = TheilSen(x, y, 0.99, nil)
	if math.Abs(est.Slope-2) > 0.2 || est.Lower > 2 || est.Upper < 2 {
		t.Fatalf("outliers: %+v", est)
	}
}

// TestTheilSenCoverage: the 95 % interval covers the true slope in about
// 95 % of noisy trials.
func TestTheilSenCoverage(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	const trials = 400
	covered := 0
	var buf []float64
	x := make([]float64, 60)
	y := make([]float64, 60)
	for range trials {
		for i := range x {
			x[i] = float64(i)
			y[i] = 0.5*x[i] + r.NormFloat64()*4
		}
		var est SlopeEstimate
		est, buf = TheilSen(x, y, 0.95, buf)
		if est.Lower <= 0.5 && 0.5 <= est.Upper {
			covered++
		}
	}
	if rate := float64(covered) / trials; rate < 0.91 || rate > 0.99 {
		t.Fatalf("coverage %.3f", rate)
	}
}

// TestLowerBoundExceeds: the counting test agrees with the full estimate.
func TestLowerBoundExceeds(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	var b1, b2 []float64
	for trial := range 300 {
		n := 3 + r.IntN(120)
		x := make([]float64, n)
		y := make([]float64, n)
		slope := r.NormFloat64()
		for i := range x {
			x[i] = float64(i * 10)
			y[i] = math.Round(slope*x[i] + r.NormFloat64()*20) // integer values: ties happen
		}
		est, _ := TheilSen(x, y, 0.999, b1)
		for _, thr := range []float64{est.Lower - 1e-9*(1+math.Abs(est.Lower)), est.Lower + 1e-9*(1+math.Abs(est.Lower)), slope, 0} {
			var got bool
			got, b2 = lowerBoundExceeds(x, y, 0.999, thr, b2)
			if want := est.Lower > thr; got != want {
				t.Fatalf("trial %d n %d thr %g: exceeds %v, estimate lower %g", trial, n, thr, got, est.Lower)
			}
		}
	}
}

// synthetic feeds a detector samples from gen and returns the sample index
// of the first alarm (-1 if none).
func synthetic(d *LeakDetector, n int, gen func(i int, s *Sample)) int {
	for i := range n {
		s := Sample{Step: i * 100, RSSValid: true, CPUAllocValid: true}
		gen(i, &s)
		if len(d.Observe(&s)) > 0 {
			return i
		}
	}
	return -1
}

// TestLeakFalseAlarmRate: flat noisy series at the default threshold raise
// an alarm in under 1 % of random trials (each trial: 250 samples, tested
// at every sample once warm).
func TestLeakFalseAlarmRate(t *testing.T) {
	const trials, samples = 200, 250
	noises := map[string]func(r *rand.Rand) func(i int, s *Sample){
		"RSS gaussian 4 MiB": func(r *rand.Rand) func(int, *Sample) {
			return func(i int, s *Sample) { s.RSSBytes = 2*GiB + int64(r.NormFloat64()*4*MiB) }
		},
		"heavy-tailed RSS, handles jitter": func(r *rand.Rand) func(int, *Sample) {
			return func(i int, s *Sample) {
				s.RSSBytes = 2*GiB + int64(r.NormFloat64()*MiB)
				if r.IntN(20) == 0 {
					s.RSSBytes += int64(r.ExpFloat64() * 32 * MiB)
				}
				s.LiveTensors = 1200 + int64(r.IntN(3))
			}
		},
		"periodic tensors (logging steps)": func(r *rand.Rand) func(int, *Sample) {
			return func(i int, s *Sample) {
				s.CPUTensorBytes = 300*MiB + int64(i%7)*8*MiB
				s.LiveTensors = 800 + int64(i%7)
				s.RSSBytes = 1*GiB + int64(r.NormFloat64()*256*1024)
			}
		},
		"slow walk below threshold": func(r *rand.Rand) func(int, *Sample) {
			var v float64 = GiB
			return func(i int, s *Sample) {
				v += 100*1024*0.3 + r.NormFloat64()*64*1024 // 0.3 MiB per 1000 steps
				s.RSSBytes = int64(v)
			}
		},
	}
	for name, mk := range noises {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			alarms := 0
			for trial := range trials {
				r := rand.New(rand.NewPCG(uint64(trial), 11))
				d := NewLeakDetector(LeakConfig{WarmupSteps: -1}, 100)
				if synthetic(d, samples, mk(r)) >= 0 {
					alarms++
				}
			}
			if rate := float64(alarms) / trials; rate >= 0.01 {
				t.Fatalf("false-alarm rate %.3f (%d of %d)", rate, alarms, trials)
			}
		})
	}
}

// TestLeakDetectionLatency: growth at 10× the threshold (1 MiB per 100
// steps, one sample per 100 steps) alarms within 50 samples, whether it
// is there from the start or begins after a full window of flat samples.
func TestLeakDetectionLatency(t *testing.T) {
	cases := []struct {
		name   string
		start  int
		series string
		gen    func(r *rand.Rand, i, start int, s *Sample)
	}{
		{"RSS from the start", 0, SeriesRSS, func(r *rand.Rand, i, start int, s *Sample) {
			s.RSSBytes = 2*GiB + int64(max(i-start, 0))*MiB + int64(r.NormFloat64()*2*MiB)
		}},
		{"RSS after 250 flat samples", 250, SeriesRSS, func(r *rand.Rand, i, start int, s *Sample) {
			s.RSSBytes = 2*GiB + int64(max(i-start, 0))*MiB + int64(r.NormFloat64()*2*MiB)
		}},
		{"tensor bytes after 250 flat samples", 250, SeriesCPUTensors, func(r *rand.Rand, i, start int, s *Sample) {
			s.RSSBytes = 2 * GiB
			s.CPUTensorBytes = 100*MiB + int64(max(i-start, 0))*MiB + int64(i%5)*4*MiB
		}},
		{"one handle per 100 steps after 250 samples", 250, SeriesLiveHandles, func(r *rand.Rand, i, start int, s *Sample) {
			s.RSSBytes = 2 * GiB
			s.LiveTensors = 1000 + int64(max(i-start, 0)) + int64(r.IntN(3))
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			worst := 0
			for trial := range 20 {
				r := rand.New(rand.NewPCG(uint64(trial), 5))
				d := NewLeakDetector(LeakConfig{WarmupSteps: -1}, 100)
				var raised []LeakVerdict
				at := -1
				for i := 0; i < c.start+200 && at < 0; i++ {
					s := Sample{Step: i * 100, RSSValid: true, CPUAllocValid: true}
					c.gen(r, i, c.start, &s)
					if raised = d.Observe(&s); len(raised) > 0 {
						at = i
					}
				}
				if at < c.start {
					t.Fatalf("trial %d: alarm at sample %d, growth starts at %d", trial, at, c.start)
				}
				if raised[0].Series != c.series {
					t.Fatalf("alarm on %s, want %s", raised[0].Series, c.series)
				}
				worst = max(worst, at-c.start+1)
			}
			if worst > 50 {
				t.Fatalf("alarm after %d samples of growth", worst)
			}
			t.Logf("alarm within %d samples", worst)
		})
	}
}

func TestLeakWarmup(t *testing.T) {
	d := NewLeakDetector(LeakConfig{WarmupSteps: 2000, StableSteps: 1000}, 100)
	s := Sample{RSSValid: true, CUDAValid: true}
	for step := 0; step <= 5000; step += 100 {
		s.Step = step
		s.CUDA.ReservedBytes = int64(min(step, 2500)) * MiB // grows until step 2500
		d.Observe(&s)
		if want := step >= 3500; d.Warm() != want {
			t.Fatalf("step %d: warm %v", step, d.Warm())
		}
	}
	if v := d.Verdicts(); len(v) != 3 || v[0].Samples != 16 { // rss, gpu allocated, handles; steps 3500..5000
		t.Fatalf("verdicts %+v", v)
	}
}

// TestLeakEndToEnd retains one real 1 MiB cgotorch tensor every 100 steps
// in a small training-like loop; the monitor must raise an alarm, and the
// same loop without the leak must not.
func TestLeakEndToEnd(t *testing.T) {
	for _, leak := range []bool{true, false} {
		name := map[bool]string{true: "leak", false: "clean"}[leak]
		t.Run(name, func(t *testing.T) {
			base := cgotorch.LiveTensors()
			var buf bytes.Buffer
			m, err := New(Options{Out: &buf, LogInterval: -1, SampleInterval: 100, Leak: LeakConfig{WarmupSteps: 500}})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			w := cgotorch.Full(0.5, cgotorch.Options{}, 64, 64)
			defer w.Free()
			var kept []*cgotorch.Tensor
			defer func() {
				for _, k := range kept {
					k.Free()
				}
			}()
			alarmStep := -1
			for step := 0; step <= 8000; step++ {
				s := cgotorch.NewScope()
				x := s.Full(1, cgotorch.Options{}, 16, 64)
				y := x.MatMul(w).ReLU().Sum()
				_ = y.Item()
				if leak && step%100 == 50 {
					kept = append(kept, s.Keep(s.Full(0, cgotorch.Options{}, 512, 512))) // 1 MiB
				}
				s.Close()
				m.LogMemoryUsage(step)
				if alarmStep < 0 && strings.Contains(buf.String(), "Memory leak suspected") {
					alarmStep = step
					if leak {
						break
					}
				}
			}
			sum := m.Summary()
			if leak {
				if alarmStep < 0 || (alarmStep-500)/100 > 50 {
					t.Fatalf("alarm at step %d:\n%s", alarmStep, buf.String())
				}
				if !sum.LeakAlarm {
					t.Error("summary shows no alarm")
				}
				t.Logf("alarm at step %d:\n%s", alarmStep, buf.String())
			} else if alarmStep >= 0 || sum.LeakAlarm {
				t.Fatalf("false alarm:\n%s\n%+v", buf.String(), sum.Leaks)
			}
			for _, k := range kept {
				k.Free()
			}
			kept = nil
			w.Free()
			if got := cgotorch.LiveTensors(); got != base {
				t.Fatalf("live tensors %d, want %d", got, base)
			}
		})
	}
}
