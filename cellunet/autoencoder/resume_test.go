package autoencoder_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/scdiffusion/gotorch-train/cellunet/autoencoder"

	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
)

// TestResumeFromStepZero: the first checkpoint (step 0, written after one
// update, as the reference's model_seed=0_step=0.pt) resumes exactly at
// step 1, and checkpoints keep the run's cadence (step % checkpoint_freq
// == 0 and the last step). The reference's VAE_train.py has no resume.
func TestResumeFromStepZero(t *testing.T) {
	data := lowRankCSR(t, 200, 50)
	mk := func() autoencoder.TrainConfig {
		cfg := smallTrainConfig(t)
		cfg.MaxSteps, cfg.CheckpointFreq, cfg.LogEvery = 12, 5, 1
		return cfg
	}
	a := mk()
	ra, err := autoencoder.Train(t.Context(), a, data)
	if err != nil {
		t.Fatal(err)
	}
	b := mk()
	b.Resume = filepath.Join(a.SaveDir, autoencoder.CheckpointName(0, 0))
	rb, err := autoencoder.Train(t.Context(), b, data)
	if err != nil {
		t.Fatal(err)
	}
	if rb.Steps != 11 || fmt.Sprint(rb.Log) != fmt.Sprint(ra.Log[1:]) {
		t.Errorf("resumed from step 0: %d steps, losses\n%v\nwant\n%v", rb.Steps, rb.Log, ra.Log[1:])
	}
	final := autoencoder.CheckpointName(0, 11)
	sameSD(t, "resumed from step 0", cgotorchtest.LoadPT(t, filepath.Join(a.SaveDir, final)), cgotorchtest.LoadPT(t, filepath.Join(b.SaveDir, final)))
	for _, step := range []int{0, 5, 10, 11} {
		_, errA := os.Stat(filepath.Join(a.SaveDir, autoencoder.CheckpointName(0, step)))
		_, errB := os.Stat(filepath.Join(b.SaveDir, autoencoder.CheckpointName(0, step)))
		if errA != nil || (step > 0 && errB != nil) {
			t.Errorf("checkpoint of step %d: straight run %v, resumed run %v", step, errA, errB)
		}
	}
}
