package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
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
// --rdzv_backend=c10d --rdzv_endpoint=127.0.0.1:PORT --rdzv_id=ID. With it
// rank 0 hosts the store. Where "localhost" does not resolve (a minimal
// root without /etc/hosts) torchrun 1.13 itself cannot run that rendezvous
// (its agent binds a probe socket to "localhost"): the launches then use
// its static rendezvous, whose agent hosts the store, and say so; the
// rank-0-hosted store is still covered by the direct launch (a PyTorchJob's
// environment), which needs no name.

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
	if !localhostResolves() {
		t.Logf("\"localhost\" does not resolve here (no /etc/hosts?), which torchrun's c10d rendezvous needs: using its static rendezvous (agent-hosted store)")
		return startTorchrunRdzv(t, nproc, dir, []string{"--rdzv_backend=static", "--master_addr=127.0.0.1",
			fmt.Sprintf("--master_port=%d", freePort(t)), "--node_rank=0"}, args...)
	}
	return startTorchrunRdzv(t, nproc, dir, []string{"--rdzv_backend=c10d", fmt.Sprintf("--rdzv_endpoint=127.0.0.1:%d", freePort(t))}, args...)
}

// localhostResolves reports whether Python resolves "localhost", as
// torchrun's agent does.
var localhostResolves = sync.OnceValue(func() bool {
	return exec.Command(torchrunPython, "-c", "import socket; socket.getaddrinfo('localhost', None)").Run() == nil
})

// directRun is a data-parallel job started without a launcher, as a
// PyTorchJob's pods are: each process gets RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR and MASTER_PORT, and rank 0 hosts the store.
type directRun struct {
	outs  []*syncBuffer
	codes []int
}

// runDirect runs nproc processes of this binary as gotorch-train args and
// waits for all of them (it may run in its own goroutine).
func runDirect(t *testing.T, nproc int, limit time.Duration, args ...string) directRun {
	t.Helper()
	port := freePort(t)
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	r := directRun{codes: make([]int, nproc)}
	cmds := make([]*exec.Cmd, nproc)
	for rank := range nproc {
		out := &syncBuffer{}
		r.outs = append(r.outs, out)
		cmd := exec.CommandContext(ctx, os.Args[0], args...)
		cmd.Env = append(os.Environ(), "GOTORCH_E2E_MAIN=1", "OMP_NUM_THREADS=1", "MASTER_ADDR=127.0.0.1", fmt.Sprintf("MASTER_PORT=%d", port),
			fmt.Sprintf("RANK=%d", rank), fmt.Sprintf("WORLD_SIZE=%d", nproc)) // as a PyTorchJob sets it: no LOCAL_RANK
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Errorf("starting rank %d: %v", rank, err)
			cancel()
			break
		}
		cmds[rank] = cmd
	}
	for rank, cmd := range cmds {
		if cmd == nil {
			r.codes[rank] = -1
			continue
		}
		if err := cmd.Wait(); err != nil {
			r.codes[rank] = -1
			if ee, ok := err.(*exec.ExitError); ok {
				r.codes[rank] = ee.ExitCode()
			}
		}
	}
	if ctx.Err() != nil {
		t.Errorf("the direct launch did not finish within %v", limit)
	}
	return r
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

	// The classifier and sampling, and a launch without torchrun, after the
	// timed scenarios above (the machine has 2 cores).
	const clsSteps, clsLR = 6, 3e-4
	clsArgs := func(save string, extra ...string) []string {
		return append([]string{"train-classifier", "--latents", lat, "--model_path", save, "--batch_size", "64", "--iterations", strconv.Itoa(clsSteps),
			"--log_interval", "1", "--save_interval", "3", "--threads", "1", "--mem_log_interval", "0", "--dist_timeout", "60"}, extra...)
	}
	cls1 := filepath.Join(dir, "cls1")
	in(clsArgs(cls1)...)
	sampleArgs := func(prefix string, extra ...string) []string {
		return append([]string{"sample", "--model_path", ckpt(one, "model000008.pt"), "--classifier_path", filepath.Join(cls1, "model000005.pt"),
			"--num_samples", "70", "--batch_size", "32", "--timestep_respacing", "ddim10", "--threads", "1", "--mem_log_interval", "0",
			"--sample_dir", prefix, "--dist_timeout", "60"}, extra...)
	}
	smp1, smpF1 := filepath.Join(dir, "smp1", "out"), filepath.Join(dir, "smpf1", "out")
	in(sampleArgs(smp1, "--cell_type", "all", "--vae_path", filepath.Join(dir, "ae", "model_seed=0_step=0.pt"))...)
	// The filter: the first class whose cells the (barely trained)
	// classifier keeps in part, over at least two batches (so both ranks'
	// batches count); if none, both runs must fail alike.
	var filterArgs []string
	var filterCode int
	var filterOut string
	for k := range 8 {
		filterArgs = []string{"--cell_type", strconv.Itoa(k), "--filter", "--filter_max_batches", "8", "--classifier_scale", "4"}
		filterCode, filterOut = run(t, context.Background(), sampleArgs(smpF1, filterArgs...)...)
		if filterCode == exitOK && strings.Contains(filterOut, "batch 1:") {
			break
		}
	}

	cls2, cls2r := filepath.Join(dir, "cls2"), filepath.Join(dir, "cls2-resumed")
	smp2, smpF2 := filepath.Join(dir, "smp2", "out"), filepath.Join(dir, "smpf2", "out")
	lCls := startTorchrun(t, 2, mk("cls"), clsArgs(cls2)...)
	lClsResumed := startTorchrun(t, 2, mk("cls-resumed"), clsArgs(cls2r, "--resume_checkpoint", filepath.Join(cls1, "model000003.pt"))...)
	// (--mem_log_interval 1: rank 0's memory series has a line per step.)
	lSmp := startTorchrun(t, 2, mk("smp"), sampleArgs(smp2, "--cell_type", "all", "--vae_path", filepath.Join(dir, "ae", "model_seed=0_step=0.pt"), "--mem_log_interval", "1")...)
	lSmpF := startTorchrun(t, 2, mk("smpf"), sampleArgs(smpF2, filterArgs...)...)
	direct := filepath.Join(dir, "direct")
	directDone := make(chan directRun, 1)
	go func() { directDone <- runDirect(t, 2, limit, trainArgs(direct)...) }()

	t.Run("train-classifier two processes equal one", func(t *testing.T) {
		if code := lCls.wait(limit); code != 0 {
			t.Fatalf("torchrun exit %d:\n%s", code, lCls.out.String())
		}
		for _, want := range []string{"[default0]:data-parallel: rank 0 of 2", "32 rows per process", "[default1]:[rank 1] Memory summary"} {
			if !strings.Contains(lCls.out.String(), want) {
				t.Errorf("output lacks %q:\n%s", want, lCls.out.String())
			}
		}
		assertProgressClose(t, filepath.Join(cls2, "progress.csv"), filepath.Join(cls1, "progress.csv"))
		for _, f := range []string{"model000003.pt", "model000005.pt"} {
			assertClassifierClose(t, "2 processes vs 1", filepath.Join(cls2, f), filepath.Join(cls1, f), clsSteps, clsLR)
		}
		if _, err := os.Stat(filepath.Join(cls2, "oom_report.rank1.json")); err == nil {
			t.Error("rank 1 wrote an OOM report")
		}
	})
	t.Run("train-classifier resume one process to two", func(t *testing.T) {
		if code := lClsResumed.wait(limit); code != 0 {
			t.Fatalf("torchrun exit %d:\n%s", code, lClsResumed.out.String())
		}
		if !strings.Contains(lClsResumed.out.String(), "[default0]:resumed from") {
			t.Errorf("no resume message:\n%s", lClsResumed.out.String())
		}
		assertClassifierClose(t, "1 process to step 3, then 2 processes", filepath.Join(cls2r, "model000005.pt"), filepath.Join(cls1, "model000005.pt"), 2, clsLR)
	})
	t.Run("sample across two processes", func(t *testing.T) {
		if code := lSmp.wait(limit); code != 0 {
			t.Fatalf("torchrun exit %d:\n%s", code, lSmp.out.String())
		}
		for _, want := range []string{"batch 1: 32 cells (rank 1)", "batch 2: 6 cells (rank 0)"} {
			if !strings.Contains(lSmp.out.String(), want) {
				t.Errorf("output lacks %q:\n%s", want, lSmp.out.String())
			}
		}
		// Bit for bit the single process's cells: every batch depends only
		// on the seed, the output and its index.
		outs, _ := filepath.Glob(smp1 + "*.npz")
		if len(outs) < 2 {
			t.Fatalf("the single process wrote %v", outs)
		}
		for _, f := range outs {
			assertSameFile(t, f, smp2+strings.TrimPrefix(f, smp1))
			h := strings.TrimSuffix(smp2+strings.TrimPrefix(f, smp1), ".npz") + ".h5ad"
			if _, err := os.Stat(h); err != nil {
				t.Errorf("rank 0 did not decode: %v", err)
			}
		}
		// The rounds (sampling, gathering) leave nothing behind: rank 0 holds
		// the same number of tensor handles at every sampling step of every
		// output.
		series, err := os.ReadFile(filepath.Join(filepath.Dir(smp2), "memory.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		var live []int64
		for _, l := range strings.Split(strings.TrimSpace(string(series)), "\n") {
			var rec struct {
				Live int64 `json:"live_tensors"`
			}
			if err := json.Unmarshal([]byte(l), &rec); err != nil {
				t.Fatal(err)
			}
			live = append(live, rec.Live)
		}
		if len(live) < 2*len(outs)*10 {
			t.Fatalf("rank 0's memory series has %d lines, want one per step (%d outputs × 2 rounds × 10 steps)", len(live), len(outs))
		}
		if lo, hi := slices.Min(live), slices.Max(live); lo != hi {
			t.Errorf("rank 0's live tensor handles range over %d..%d across the sampling steps, want constant", lo, hi)
		}
	})
	t.Run("sample with the filter across two processes", func(t *testing.T) {
		code := lSmpF.wait(limit)
		if (code == 0) != (filterCode == exitOK) {
			t.Fatalf("torchrun exit %d, the single process %d:\n%s\n--- single process:\n%s", code, filterCode, lSmpF.out.String(), filterOut)
		}
		outs, _ := filepath.Glob(smpF1 + "*.npz")
		got, _ := filepath.Glob(smpF2 + "*.npz")
		if len(got) != len(outs) {
			t.Fatalf("2 processes wrote %d outputs, the single process %d", len(got), len(outs))
		}
		for _, f := range outs {
			assertSameFile(t, f, smpF2+strings.TrimPrefix(f, smpF1))
		}
		t.Logf("%s: %d outputs (single process exit %d)", strings.Join(filterArgs, " "), len(outs), filterCode)
	})
	t.Run("store hosted by rank 0 without a launcher", func(t *testing.T) {
		r := <-directDone
		for rank, code := range r.codes {
			if code != 0 {
				t.Fatalf("rank %d exit %d:\n%s", rank, code, r.outs[rank].String())
			}
		}
		if !strings.Contains(r.outs[0].String(), "hosted by rank 0") {
			t.Errorf("rank 0 did not host the store:\n%s", r.outs[0].String())
		}
		assertIdentical(t, "2 processes without a launcher", ckpt(direct, "model000008.pt"), ckpt(oneMB, "model000008.pt"))
	})
}

// assertSameFile fails unless the two files hold the same bytes.
func assertSameFile(t *testing.T, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Errorf("%s and %s differ", a, b)
	}
}

// assertProgressClose compares the losses and accuracies two classifier
// runs logged (progress.csv): the data-parallel run's BatchNorm sums its
// statistics in another order (float64 over the ranks), which moves the
// loss by a few float32 ulps (measured 5e-8 relative), and the
// accuracies agree exactly or within one cell of a quartile.
func assertProgressClose(t *testing.T, got, want string) {
	t.Helper()
	read := func(p string) [][]string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var rows [][]string
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			rows = append(rows, strings.Split(l, ","))
		}
		return rows
	}
	g, w := read(got), read(want)
	if len(g) != len(w) || len(w) < 2 {
		t.Fatalf("%s has %d lines, %s %d", got, len(g), want, len(w))
	}
	for i := 1; i < len(w); i++ {
		for c, name := range w[0] {
			a, errA := strconv.ParseFloat(g[i][c], 64)
			b, errB := strconv.ParseFloat(w[i][c], 64)
			if (errA == nil) != (errB == nil) || (errA == nil && math.Abs(a-b) > 1e-5*math.Abs(b)+1e-7) {
				if strings.Contains(name, "acc") && math.Abs(a-b) <= 1.0/16 {
					continue // one cell of a quartile (≥ 16 cells) changed its argmax
				}
				t.Errorf("step %s %s: %s, the single process %s", w[i][0], name, g[i][c], w[i][c])
			}
		}
	}
}

// beforeBatchNorm names the classifier's parameters whose true gradient is
// zero: biases added just before a BatchNorm, which subtracts them again,
// and the running means that follow them. AdamW scales the rounding noise
// of such a gradient to steps of about lr, whatever its size, so there two
// runs that differ in the order of float sums drift apart by up to lr per
// step (and the model's output does not change).
var beforeBatchNorm = regexp.MustCompile(`^(fc[123]\.bias|emb_layers[12]\.1\.bias|norm[123]\.running_mean)$`)

// assertClassifierClose compares two classifier checkpoints after steps
// updates at learning rate lr: every weight within 1e-4 (measured 6e-6
// after 6 steps), those before a BatchNorm within 2·lr per step.
func assertClassifierClose(t *testing.T, what, got, want string, steps int, lr float64) {
	t.Helper()
	g, w := cgotorchtest.LoadPT(t, got), cgotorchtest.LoadPT(t, want)
	if len(g) != len(w) {
		t.Fatalf("%s: %s has %d tensors, %s %d", what, got, len(g), want, len(w))
	}
	for k, wv := range w {
		gv, ok := g[k]
		if !ok || len(gv) != len(wv) {
			t.Fatalf("%s: %s missing or of another size in %s", what, k, got)
		}
		bound := 1e-4
		if beforeBatchNorm.MatchString(k) {
			bound = 2 * lr * float64(steps)
		}
		md := 0.0
		for i := range wv {
			md = max(md, math.Abs(gv[i]-wv[i]))
		}
		if md > bound || md != md {
			t.Errorf("%s: %s differs by up to %.3g (bound %.3g)", what, k, md, bound)
		}
	}
}
