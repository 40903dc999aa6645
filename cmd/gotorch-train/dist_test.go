package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/scdiffusion/gotorch-train/cgotorch/cgotorchtest"
)

// Data-parallel training end to end: two processes on the CPU with Gloo,
// started by Debian's torchrun (python3 -m torch.distributed.run) as a user
// would, each being this test binary acting as gotorch-train
// (GOTORCH_E2E_MAIN). Runs with one process use the same binary in-process.
//
// torchrun: Debian 12's (torch 1.13 on Python 3.11) crashes under its
// default --redirects 0 --tee 0, so every launch passes --redirects 1 --tee 1
// --log_dir. Its --standalone fixes the rendezvous port at 29400, which
// collides between tests running at once (and other users of the machine),
// so the launches spell out what --standalone sets, with a free port:
// --rdzv_backend=c10d --rdzv_endpoint=127.0.0.1:PORT --rdzv_id=ID (an address: a minimal root may have no /etc/hosts entry for localhost).

const torchrunPython = "/usr/bin/python3" // Debian's python3-torch is only visible to it

// freePort returns a TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer is a bytes.Buffer safe for the writer goroutines of exec.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// launch is one torchrun run of nproc gotorch-train processes.
type launch struct {
	t      *testing.T
	id     string
	logDir string
	cmd    *exec.Cmd
	out    syncBuffer // torchrun's output: the ranks' stdout (tee'd) and stderr
	done   chan struct{}
	err    error
	ended  time.Time
}

// startTorchrun starts `torchrun ... --no_python <this binary> args...`
// with the c10d rendezvous (rank 0 hosts the store). Every process it
// starts is killed when the test ends.
func startTorchrun(t *testing.T, nproc int, dir string, args ...string) *launch {
	return startTorchrunRdzv(t, nproc, dir, []string{"--rdzv_backend=c10d", fmt.Sprintf("--rdzv_endpoint=127.0.0.1:%d", freePort(t))}, args...)
}

// startTorchrunRdzv is startTorchrun with the given rendezvous flags.
func startTorchrunRdzv(t *testing.T, nproc int, dir string, rdzv []string, args ...string) *launch {
	t.Helper()
	if err := exec.Command(torchrunPython, "-c", "import torch.distributed.run").Run(); err != nil {
		t.Fatalf("%s cannot import torch.distributed.run (%v): install Debian's python3-torch (make deps)", torchrunPython, err)
	}
	l := &launch{t: t, id: fmt.Sprintf("gt%d_%d", os.Getpid(), freePort(t)), logDir: filepath.Join(dir, "torchrun-logs"), done: make(chan struct{})}
	targs := append([]string{"-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=" + strconv.Itoa(nproc)}, rdzv...)
	targs = append(targs, "--rdzv_id="+l.id, "--monitor_interval=0.5", "--redirects", "1", "--tee", "1",
		"--log_dir", l.logDir, "--no_python", os.Args[0])
	l.cmd = exec.Command(torchrunPython, append(targs, args...)...)
	l.cmd.Env = append(os.Environ(), "GOTORCH_E2E_MAIN=1", "OMP_NUM_THREADS=1")
	l.cmd.Stdout, l.cmd.Stderr = &l.out, &l.out
	l.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		l.err = l.cmd.Wait()
		l.ended = time.Now()
		close(l.done)
	}()
	t.Cleanup(func() {
		select {
		case <-l.done:
		default:
			_ = syscall.Kill(-l.cmd.Process.Pid, syscall.SIGKILL)
			<-l.done
		}
		for _, pid := range l.workers() { // in case one left the process group
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return l
}

// wait returns torchrun's exit code (-1 if it had to be killed after limit).
func (l *launch) wait(limit time.Duration) int {
	select {
	case <-l.done:
	case <-time.After(limit):
		_ = syscall.Kill(-l.cmd.Process.Pid, syscall.SIGKILL)
		<-l.done
		l.t.Errorf("torchrun did not finish within %v; output:\n%s", limit, l.out.String())
		return -1
	}
	if l.err == nil {
		return 0
	}
	if ee, ok := l.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// workers returns the pids of this launch's gotorch-train processes, by rank.
func (l *launch) workers() map[int]int {
	out := map[int]int{}
	procs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, p := range procs {
		env, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(env, []byte("TORCHELASTIC_RUN_ID="+l.id+"\x00")) {
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if r, ok := bytes.CutPrefix(kv, []byte("RANK=")); ok {
				rank, _ := strconv.Atoi(string(r))
				pid, _ := strconv.Atoi(strings.Split(p, "/")[2])
				out[rank] = pid
			}
		}
	}
	return out
}

// waitFor waits until torchrun's output matches re.
func (l *launch) waitFor(re *regexp.Regexp, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for !re.MatchString(l.out.String()) {
		select {
		case <-l.done:
			return fmt.Errorf("torchrun ended before %q appeared:\n%s", re, l.out.String())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %q within %v:\n%s", re, limit, l.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// signalRank sends sig to rank's process once rank 0 has logged step 2,
// and returns when.
func (l *launch) signalRank(rank int, sig syscall.Signal, limit time.Duration) (time.Time, error) {
	if err := l.waitFor(regexp.MustCompile(`\[default0\]:step 2 samples`), limit); err != nil {
		return time.Time{}, err
	}
	pid, ok := l.workers()[rank]
	if !ok {
		return time.Time{}, fmt.Errorf("rank %d's process not found:\n%s", rank, l.out.String())
	}
	return time.Now(), syscall.Kill(pid, sig)
}

// diffStats compares two state dicts: the largest absolute difference and
// the fraction of elements differing by more than tol.
func diffStats(t *testing.T, a, b string, tol float64) (maxDiff, fracOver float64) {
	t.Helper()
	x, y := cgotorchtest.LoadPT(t, a), cgotorchtest.LoadPT(t, b)
	if len(x) != len(y) {
		t.Fatalf("%s has %d tensors, %s %d", a, len(x), b, len(y))
	}
	var n, over int
	for k, xv := range x {
		yv, ok := y[k]
		if !ok || len(yv) != len(xv) {
			t.Fatalf("%s: %s missing or of another size in %s", a, k, b)
		}
		for i := range xv {
			d := xv[i] - yv[i]
			if d < 0 {
				d = -d
			}
			if d != d { // NaN
				d = 1e300
			}
			maxDiff = max(maxDiff, d)
			if d > tol {
				over++
			}
			n++
		}
	}
	return maxDiff, float64(over) / float64(n)
}

func assertIdentical(t *testing.T, what, a, b string) {
	t.Helper()
	if d, _ := diffStats(t, a, b, 0); d != 0 {
		t.Errorf("%s: %s and %s differ (max |Δ| %.3g), want bit-identical", what, filepath.Base(a), filepath.Base(b), d)
	}
}

// distLatents makes real latents for the data-parallel tests: the PBMC
// cells through a (one-step) trained autoencoder.
func distLatents(t *testing.T, dir string) string {
	t.Helper()
	ae := filepath.Join(dir, "ae")
	if code, out := run(t, context.Background(), "train-ae", "--data_dir", pbmc(t), "--save_dir", ae, "--max_steps", "1",
		"--threads", "1", "--mem_log_interval", "0"); code != exitOK {
		t.Fatalf("train-ae exit %d:\n%s", code, out)
	}
	lat := filepath.Join(dir, "latents.npz")
	if code, out := run(t, context.Background(), "encode", "--data_dir", pbmc(t), "--vae_path", filepath.Join(ae, "model_seed=0_step=0.pt"),
		"--output", lat, "--threads", "1"); code != exitOK {
		t.Fatalf("encode exit %d:\n%s", code, out)
	}
	return lat
}

// TestDataParallel runs the data-parallel scenarios: the one-process runs
// in-process first (they share libtorch's global state, so one at a time),
// then the torchrun launches side by side, then the runs that resume from
// them.
func TestDataParallel(t *testing.T) {
	dir := t.TempDir()
	lat := distLatents(t, dir)
	const steps, batch = 8, 32
	trainArgs := func(save string, extra ...string) []string {
		return append([]string{"train", "--latents", lat, "--save_dir", save, "--model_name", "m", "--batch_size", strconv.Itoa(batch),
			"--lr_anneal_steps", strconv.Itoa(steps), "--save_interval", "3", "--log_interval", "1", "--mem_log_interval", "4",
			"--cleanup_interval", "0", "--threads", "1", "--dist_timeout", "60"}, extra...)
	}
	ckpt := func(save string, file string) string { return filepath.Join(save, "m", file) }
	in := func(args ...string) string {
		t.Helper()
		code, out := run(t, context.Background(), args...)
		if code != exitOK {
			t.Fatalf("%s exit %d:\n%s", strings.Join(args[:1], " "), code, out)
		}
		return out
	}
	aeArgs := func(save string) []string {
		return []string{"train-ae", "--data_dir", pbmc(t), "--save_dir", save, "--max_steps", "3", "--checkpoint_freq", "100",
			"--log_interval", "1", "--batch_size", "64", "--threads", "1", "--mem_log_interval", "0", "--dist_timeout", "60"}
	}

	// One process: the whole batch, and the batch in two microbatches of
	// 16 (the same per-sample work and gradient sum as two ranks of 16).
	one, oneMB := filepath.Join(dir, "one"), filepath.Join(dir, "one-mb")
	oneOut := in(trainArgs(one)...)
	in(trainArgs(oneMB, "--microbatch", "16")...)
	// train-ae's data-parallel step is autograd's (synchronised BatchNorm):
	// the single process it is compared with uses autograd too.
	ae1 := filepath.Join(dir, "ae1")
	ae1Out := in(append(aeArgs(ae1), "--train_step", "generic")...)

	// Two processes, side by side: a fresh run; a run resumed from the
	// one-process checkpoint 3; train-ae; a run stopped by SIGTERM on rank 1
	// only; a run whose rank 1 is killed.
	two, twoResumed, ae2 := filepath.Join(dir, "two"), filepath.Join(dir, "two-resumed"), filepath.Join(dir, "ae2")
	sig, killed := filepath.Join(dir, "sig"), filepath.Join(dir, "killed")
	mk := func(name string) string { d := filepath.Join(dir, "launch-"+name); os.MkdirAll(d, 0o755); return d }
	lTwo := startTorchrun(t, 2, mk("two"), trainArgs(two)...)
	lResumed := startTorchrun(t, 2, mk("resumed"), trainArgs(twoResumed, "--resume_checkpoint", ckpt(oneMB, "model000003.pt"))...)
	lAE := startTorchrun(t, 2, mk("ae"), aeArgs(ae2)...)
	// torchrun's static rendezvous: its agent hosts the store
	// (TORCHELASTIC_USE_AGENT_STORE=True, keys under /worker/attempt_0).
	agent := filepath.Join(dir, "agent")
	lAgent := startTorchrunRdzv(t, 2, mk("agent"), []string{"--rdzv_backend=static", "--master_addr=127.0.0.1",
		fmt.Sprintf("--master_port=%d", freePort(t)), "--node_rank=0"}, trainArgs(agent)...)
	forever := func(save string) []string {
		return []string{"train", "--latents", lat, "--save_dir", save, "--model_name", "m", "--batch_size", strconv.Itoa(batch),
			"--lr_anneal_steps", "0", "--save_interval", "100000", "--log_interval", "1", "--mem_log_interval", "0",
			"--threads", "1", "--dist_timeout", "20"}
	}
	lSig := startTorchrun(t, 2, mk("sig"), forever(sig)...)
	lKill := startTorchrun(t, 2, mk("kill"), forever(killed)...)
	const limit = 4 * time.Minute // the machine may be busy; a hang still ends
	// Signal as soon as each has made progress, while the others run.
	type sent struct {
		at  time.Time
		err error
	}
	sigSent, killSent := make(chan sent, 1), make(chan sent, 1)
	go func() { at, err := lSig.signalRank(1, syscall.SIGTERM, limit); sigSent <- sent{at, err} }()
	go func() { at, err := lKill.signalRank(1, syscall.SIGKILL, limit); killSent <- sent{at, err} }()

	t.Run("two processes equal one", func(t *testing.T) {
		if code := lTwo.wait(limit); code != 0 {
			t.Fatalf("torchrun exit %d:\n%s", code, lTwo.out.String())
		}
		// Exactly the microbatched single process: the all-reduce adds the two
		// shards' gradients as accumulation adds the two microbatches'.
		for _, f := range []string{"model000008.pt", "ema_0.9999_000008.pt", "model000003.pt"} {
			assertIdentical(t, "2 processes vs 1 process in 2 microbatches", ckpt(two, f), ckpt(oneMB, f))
		}
		// Against the whole batch in one pass the sums are ordered
		// differently (two half-batch matrix products added, versus one): a
		// few ulps per gradient, which AdamW's normalisation carries into the
		// weights at the 1e-7 level (measured 3.6e-7 after 6 steps).
		md, frac := diffStats(t, ckpt(two, "model000008.pt"), ckpt(one, "model000008.pt"), 1e-5)
		if frac > 0.001 || md > 2*1e-4*steps {
			t.Errorf("2 processes vs 1: max |Δw| %.3g, %.4f%% of weights off by > 1e-5", md, 100*frac)
		}
		t.Logf("2 processes vs 1 (whole batch): max |Δw| %.3g", md)
		// The log is the single process's: rank 0 logs the whole batch's losses.
		for _, line := range regexp.MustCompile(`step 7 samples 256 loss \S+`).FindAllString(oneOut, 1) {
			if !strings.Contains(lTwo.out.String(), line) {
				t.Errorf("rank 0's log lacks the single process's %q:\n%s", line, lTwo.out.String())
			}
		}
		// Each rank runs the fused step on its 16 rows.
		for _, want := range []string{"[default1]:[rank 1] Step 4: CPU: ", "[default0]:[rank 0] Step 4: CPU: ", "rank 0 of 2",
			"training step: fused (CPU kernels", "on this process's 16 rows of the batch"} {
			if !strings.Contains(lTwo.out.String(), want) {
				t.Errorf("output lacks %q:\n%s", want, lTwo.out.String())
			}
		}
		if strings.Contains(lTwo.out.String(), "[default1]:step ") {
			t.Errorf("rank 1 printed training log lines:\n%s", lTwo.out.String())
		}
		if _, err := os.Stat(filepath.Join(two, "m", "oom_report.rank1.json")); err == nil {
			t.Error("rank 1 wrote an OOM report")
		}
	})
	t.Run("store hosted by torchrun's agent", func(t *testing.T) {
		if code := lAgent.wait(limit); code != 0 {
			t.Fatalf("torchrun exit %d:\n%s", code, lAgent.out.String())
		}
		if !strings.Contains(lAgent.out.String(), "hosted by torchrun's agent") {
			t.Errorf("the ranks did not use the agent's store:\n%s", lAgent.out.String())
		}
		assertIdentical(t, "2 processes, agent's store", ckpt(agent, "model000008.pt"), ckpt(oneMB, "model000008.pt"))
	})
	t.Run("resume one process to two", func(t *testing.T) {
		if code := lResumed.wait(limit); code != 0 {
			t.Fatalf("torchrun exit %d:\n%s", code, lResumed.out.String())
		}
		if !strings.Contains(lResumed.out.String(), "resumed from") {
			t.Errorf("no resume message:\n%s", lResumed.out.String())
		}
		assertIdentical(t, "1 process to step 3, then 2 processes", ckpt(twoResumed, "model000008.pt"), ckpt(oneMB, "model000008.pt"))
		assertIdentical(t, "1 process to step 3, then 2 processes (EMA)", ckpt(twoResumed, "ema_0.9999_000008.pt"), ckpt(oneMB, "ema_0.9999_000008.pt"))
	})
	t.Run("train-ae two processes equal one", func(t *testing.T) {
		if code := lAE.wait(limit); code != 0 {
			t.Fatalf("torchrun exit %d:\n%s", code, lAE.out.String())
		}
		if want := "training step: autograd (the fused step does not cover data-parallel training"; !strings.Contains(lAE.out.String(), want) {
			t.Errorf("rank 0's log lacks %q:\n%s", want, lAE.out.String())
		}
		// BatchNorm uses the global batch's statistics (summed over the
		// ranks in float64), so step 0's loss (before any update) agrees to
		// 1e-5 relative and later ones to 1e-4: after an
		// AdamW step the weights carry the rounding noise described below.
		lossRE := regexp.MustCompile(`step (\d): loss (\S+)`)
		twoLoss := map[string]float64{}
		for _, m := range lossRE.FindAllStringSubmatch(lAE.out.String(), -1) {
			twoLoss[m[1]], _ = strconv.ParseFloat(m[2], 64)
		}
		for _, m := range lossRE.FindAllStringSubmatch(ae1Out, -1) {
			want, _ := strconv.ParseFloat(m[2], 64)
			got, ok := twoLoss[m[1]]
			tol := 1e-4 * math.Abs(want)
			if m[1] == "0" {
				tol = 1e-5 * math.Abs(want)
			}
			if !ok || math.Abs(got-want) > tol {
				t.Errorf("step %s: rank 0 logged loss %v (present: %v), the single process %v (tolerance %g)", m[1], got, ok, want, tol)
			}
		}
		// ... and the weights agree except where the true gradient is zero
		// or nearly so (a Linear bias before BatchNorm, genes absent from
		// the batch): there AdamW scales rounding noise to ±lr steps whatever
		// its size, so those weights differ by up to ~lr per step, and how
		// many there are depends on the matrix-product kernels. Measured:
		// 0.02–0.03 % of weights off by > 1e-5 with OpenBLAS's Cooperlake
		// kernels, 10–12 % with Haswell and Prescott; without synchronised
		// BatchNorm 89 %.
		md, frac := diffStats(t, filepath.Join(ae1, "model_seed=0_step=2.pt"), filepath.Join(ae2, "model_seed=0_step=2.pt"), 1e-5)
		if frac > 0.25 || md > 3*2*5e-4 {
			t.Errorf("train-ae 2 processes vs 1: max |Δw| %.3g, %.3f%% of weights off by > 1e-5", md, 100*frac)
		}
		t.Logf("train-ae 2 processes vs 1: max |Δw| %.3g, %.4f%% off by > 1e-5", md, 100*frac)
	})
	t.Run("SIGTERM on one rank stops both with a checkpoint", func(t *testing.T) {
		if s := <-sigSent; s.err != nil {
			t.Fatal(s.err)
		}
		if code := lSig.wait(limit); code != 0 {
			t.Fatalf("torchrun exit %d after SIGTERM to rank 1 (want both ranks to stop cleanly):\n%s", code, lSig.out.String())
		}
		m := regexp.MustCompile(`interrupted after step (\d+): checkpoint \S+ written`).FindStringSubmatch(lSig.out.String())
		if m == nil {
			t.Fatalf("rank 0 did not stop with a checkpoint:\n%s", lSig.out.String())
		}
		last, _ := strconv.Atoi(m[1])
		if _, err := os.Stat(ckpt(sig, fmt.Sprintf("state%06d.safetensors", last))); err != nil {
			t.Fatalf("checkpoint %d incomplete: %v", last, err)
		}
	})
	t.Run("a killed peer ends the other rank within the timeout", func(t *testing.T) {
		s := <-killSent
		if s.err != nil {
			t.Fatal(s.err)
		}
		killedAt := s.at
		code := lKill.wait(limit)
		out := lKill.out.String()
		if code == 0 {
			t.Fatalf("torchrun exit 0 after rank 1 was killed:\n%s", out)
		}
		if took := lKill.ended.Sub(killedAt); took > 20*time.Second+15*time.Second {
			t.Errorf("the run ended %v after the kill (--dist_timeout 20)", took)
		}
		m := regexp.MustCompile(`gotorch-train: rank 0: step \d+: .*(lost contact with the other processes|Connection closed).*`).FindString(out)
		if m == "" {
			t.Fatalf("rank 0 did not report the lost peer:\n%s", out)
		}
		t.Logf("rank 0: %s", m)
	})
	// A two-process checkpoint resumed by one process.
	t.Run("resume two processes to one", func(t *testing.T) {
		if lTwo.wait(limit) != 0 {
			t.Skip("needs the two-process run")
		}
		resumed := filepath.Join(dir, "one-resumed")
		in(trainArgs(resumed, "--microbatch", "16", "--resume_checkpoint", ckpt(two, "model000003.pt"))...)
		assertIdentical(t, "2 processes to step 3, then 1", ckpt(resumed, "model000008.pt"), ckpt(oneMB, "model000008.pt"))
	})
}
