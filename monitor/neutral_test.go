package monitor_test

import (
	"context"
	"io"
	"math"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet"
	"github.com/scdiffusion/gotorch-train/cellunet/trainer"
	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/monitor"
)

// TestMonitoringAndCleanupDoNotChangeTraining (memory.md M6, U25, U26): the
// same 2,000 training steps with monitoring and cleanup off, with a sample
// every step and a cleanup every 10 steps, and with the defaults give
// bit-identical losses and final parameters.
func TestMonitoringAndCleanupDoNotChangeTraining(t *testing.T) {
	g, err := ct.NewGenerator(ct.CPU, 11)
	if err != nil {
		t.Fatal(err)
	}
	s := ct.NewScope()
	data := s.Randn(ct.Options{}, g, 256, 16).Normalize(2, 1, 1e-12)
	g.Close()
	defer s.Close()
	run := func(opts *monitor.Options) ([]float64, []float32) {
		cfg := trainer.DefaultConfig()
		cfg.Model = cellunet.Config{InputDim: 16, Hidden: []int64{32, 32, 16, 8}}
		cfg.BatchSize, cfg.LR, cfg.LRAnnealSteps = 32, 1e-3, 2000
		cfg.LogInterval, cfg.SaveInterval = 500, 1<<30
		cfg.SaveDir = t.TempDir()
		var losses []float64
		var m *monitor.Monitor
		if opts != nil {
			opts.Out = io.Discard
			var err error
			if m, err = monitor.New(*opts); err != nil {
				t.Fatal(err)
			}
			defer m.Close()
		}
		var final []float32
		cfg.Hooks.AfterStep = func(step int, info trainer.StepInfo) {
			losses = append(losses, info.Loss.Item())
			if m != nil {
				m.OnStep(step)
			}
		}
		if _, err := trainer.Train(context.Background(), cfg, data); err != nil {
			t.Fatal(err)
		}
		sd, err := ct.LoadPT(cfg.SaveDir+"/model002000.pt", ct.CPU)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range sd {
			final = append(final, n.T.Float32s()...)
		}
		ct.FreeAll(sd)
		return losses, final
	}
	offL, offW := run(nil)
	everyL, everyW := run(&monitor.Options{LogInterval: 1, SampleInterval: 1, CleanupInterval: 10})
	defL, defW := run(&monitor.Options{CleanupInterval: monitor.DefaultCleanupInterval})
	for name, other := range map[string][]float64{"every step": everyL, "defaults": defL} {
		for i := range offL {
			if math.Float64bits(offL[i]) != math.Float64bits(other[i]) {
				t.Fatalf("%s: loss %d is %v, %v without monitoring", name, i, other[i], offL[i])
			}
		}
	}
	for name, other := range map[string][]float32{"every step": everyW, "defaults": defW} {
		for i := range offW {
			if math.Float32bits(offW[i]) != math.Float32bits(other[i]) {
				t.Fatalf("%s: parameter %d is %v, %v without monitoring", name, i, other[i], offW[i])
			}
		}
	}
}
