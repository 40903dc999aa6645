package cgotorch_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
)

// The two-process tests: this test process is rank 0 and hosts the
// TCPStore; it starts itself again as rank 1 (TestDistPeerProcess, selected
// by the environment) for one scenario.
const (
	envPeer     = "CGOTORCH_DIST_TEST_PEER" // scenario name
	envPeerPort = "CGOTORCH_DIST_TEST_PORT"
	// peerTimeout bounds the collectives; the store's timeout is longer, so
	// that a peer process that is slow to start (a loaded machine) does not
	// fail the rendezvous.
	peerTimeout  = 3 * time.Second
	storeTimeout = time.Minute
)

// requireGloo fails without the Gloo backend in the CPU flavour (Debian's
// libgloo-dev provides its headers) and skips in a CUDA flavour built from a
// pip wheel, which ships no Gloo headers (NCCL is that flavour's backend).
func requireGloo(t *testing.T) {
	t.Helper()
	if ct.Gloo.Available() {
		return
	}
	if ct.Build().CUDA {
		t.Skip("this CUDA-flavour libcgotorch was built without Gloo's headers (pip wheels ship none); the CPU flavour runs these tests")
	}
	t.Fatal("this libcgotorch has no Gloo backend (install libgloo-dev and rebuild the shim: make deps shim)")
}

// startPeer starts rank 1 for scenario and returns a wait function that
// reports its failure (exit status and output).
func startPeer(t *testing.T, scenario string, port int) (*exec.Cmd, func() error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDistPeerProcess$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), envPeer+"="+scenario, envPeerPort+"="+strconv.Itoa(port))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
		<-done
	})
	return cmd, func() error {
		select {
		case err := <-done:
			done <- err // for the cleanup
			if err != nil {
				return fmt.Errorf("rank 1: %v\n%s", err, out.String())
			}
			return nil
		case <-time.After(30 * time.Second):
			return fmt.Errorf("rank 1 did not finish\n%s", out.String())
		}
	}
}

// join creates the store (server on a free port for rank 0) and the group.
func join(t testing.TB, rank, port int, timeout time.Duration) (*ct.Store, *ct.ProcessGroup) {
	t.Helper()
	st, err := ct.NewTCPStore(ct.TCPStoreConfig{Host: "127.0.0.1", Port: port, Server: rank == 0, WorldSize: 2, Timeout: storeTimeout})
	if err != nil {
		t.Fatalf("rank %d: store: %v", rank, err)
	}
	if rank == 0 && port == 0 {
		return st, nil
	}
	// Rank 0 joins the group once rank 1 is up: the group's short timeout
	// covers its rendezvous too, and a process may be slow to start.
	if err := st.Set("peer/ready", []byte{1}); err != nil {
		t.Fatalf("rank %d: store: %v", rank, err)
	}
	pg, err := ct.NewProcessGroup(st, ct.ProcessGroupConfig{Backend: ct.Gloo, Rank: rank, Size: 2, Timeout: timeout, Device: ct.CPU, Interface: "lo"})
	if err != nil {
		st.Close()
		t.Fatalf("rank %d: process group: %v", rank, err)
	}
	return st, pg
}

// serve starts rank 0's store and rank 1 for scenario, then joins the group.
func serve(t *testing.T, scenario string) (*ct.ProcessGroup, *ct.Store, func() error) {
	t.Helper()
	requireGloo(t)
	st, _ := join(t, 0, 0, peerTimeout)
	port, err := st.Port()
	if err != nil {
		t.Fatal(err)
	}
	_, wait := startPeer(t, scenario, port)
	if _, err := st.Get("peer/ready"); err != nil {
		st.Close()
		t.Fatalf("rank 1 did not connect: %v (%v)", err, wait())
	}
	pg, err := ct.NewProcessGroup(st, ct.ProcessGroupConfig{Backend: ct.Gloo, Rank: 0, Size: 2, Timeout: peerTimeout, Device: ct.CPU, Interface: "lo"})
	if err != nil {
		st.Close()
		t.Fatalf("rank 0: process group: %v (%v)", err, wait())
	}
	return pg, st, wait
}

// collectives is what both ranks run in the "ok" scenario; it returns the
// first mismatch.
func collectives(pg *ct.ProcessGroup, st *ct.Store) error {
	r := pg.Rank()
	s := ct.NewScope()
	defer s.Close()
	var err error
	check := func(what string, got *ct.Tensor, want []float32) {
		if err != nil {
			return
		}
		g := got.Float32s()
		for i := range want {
			if g[i] != want[i] {
				err = fmt.Errorf("rank %d: %s = %v, want %v", r, what, g, want)
				return
			}
		}
	}
	if e := ct.Try(func() {
		// Sum and average of [r+1, 10(r+1), -0.5].
		x := s.FromSlice([]float32{float32(r + 1), float32(10 * (r + 1)), -0.5})
		if e := pg.AllReduce(x, ct.DistSum); e != nil {
			panic(e)
		}
		check("all_reduce sum", x, []float32{3, 30, -1})
		y := s.FromSlice([]float32{float32(r + 1), 4})
		if e := pg.AllReduce(y, ct.DistAvg); e != nil {
			panic(e)
		}
		check("all_reduce avg", y, []float32{1.5, 4})
		// A large buffer (Gloo's chunked ring path): rank r holds r+i.
		big := s.Arange(0, 1<<20, 1, ct.Options{}).AddScalar(float64(r))
		if e := pg.AllReduce(big, ct.DistSum); e != nil {
			panic(e)
		}
		check("large all_reduce", big.Narrow(0, (1<<20)-2, 2), []float32{2*((1<<20)-2) + 1, 2*((1<<20)-1) + 1})
		// Broadcast from rank 1.
		b := s.FromSlice([]float32{float32(100 * r), 7})
		if e := pg.Broadcast(b, 1); e != nil {
			panic(e)
		}
		check("broadcast", b, []float32{100, 7})
		if e := pg.Barrier(); e != nil {
			panic(e)
		}
		// The differentiable sum: y = Σ_r x_r, loss_r = Σ c_r·y, so every
		// rank's dx = Σ_r c_r.
		xg := s.FromSlice([]float32{1, 2}).SetRequiresGrad(true)
		sum := pg.AllReduceSumAutograd(xg.MulScalar(float64(r + 1)))
		check("all_reduce_sum_autograd forward", sum, []float32{3, 6})
		c := s.FromSlice([]float32{float32(r + 1), float32(2 * (r + 1))})
		sum.Mul(c).Sum().Backward()
		// d/dx of Σ_r c_r·Σ_q (q+1)x: rank r's x enters with factor (r+1).
		check("all_reduce_sum_autograd backward", xg.Grad(s), []float32{float32(3 * (r + 1)), float32(6 * (r + 1))})
	}); e != nil {
		return e
	}
	if err != nil {
		return err
	}
	// The store: each rank publishes a key and reads the other's.
	if e := st.Set(fmt.Sprintf("hello/%d", r), []byte(fmt.Sprintf("from %d", r))); e != nil {
		return e
	}
	v, e := st.Get(fmt.Sprintf("hello/%d", 1-r))
	if e != nil {
		return e
	}
	if string(v) != fmt.Sprintf("from %d", 1-r) {
		return fmt.Errorf("rank %d: store get = %q", r, v)
	}
	if _, e := st.Add("counter", 1); e != nil {
		return e
	}
	return pg.Barrier()
}

func TestDistCollectivesTwoProcesses(t *testing.T) {
	baseT, baseD := ct.LiveTensors(), ct.LiveDistHandles()
	pg, st, wait := serve(t, "ok")
	if err := collectives(pg, st); err != nil {
		t.Error(err)
	}
	if n, err := st.Add("counter", 0); err != nil || n != 2 {
		t.Errorf("store counter = %d, %v; want 2", n, err)
	}
	if err := wait(); err != nil {
		t.Error(err)
	}
	pg.Close()
	pg.Close() // idempotent
	st.Close()
	if err := pg.Barrier(); !errors.Is(err, ct.ErrInvalidArgument) {
		t.Errorf("barrier on a closed group: %v, want ErrInvalidArgument", err)
	}
	if d := ct.LiveDistHandles() - baseD; d != 0 {
		t.Errorf("%d store/process-group handles leaked", d)
	}
	if d := ct.LiveTensors() - baseT; d != 0 {
		t.Errorf("%d tensor handles leaked", d)
	}
}

// A peer that exits: the next collective fails with ErrDistributed at once
// (its connection closes), well within the timeout.
func TestDistDeadPeer(t *testing.T) {
	pg, st, wait := serve(t, "die")
	defer st.Close()
	defer pg.Close()
	if err := pg.Barrier(); err != nil {
		t.Fatal(err)
	}
	_ = wait() // rank 1 has exited (with status 3)
	s := ct.NewScope()
	defer s.Close()
	start := time.Now()
	err := pg.AllReduce(s.Ones(ct.Options{}, 4), ct.DistSum)
	took := time.Since(start)
	if !errors.Is(err, ct.ErrDistributed) {
		t.Fatalf("all_reduce with a dead peer: %v, want ErrDistributed", err)
	}
	if took > peerTimeout+6*time.Second {
		t.Errorf("the error took %v, timeout %v", took, peerTimeout)
	}
	t.Logf("dead peer: %v after %v", err, took.Round(time.Millisecond))
}

// A peer that stops answering: the collective times out with ErrDistTimeout.
func TestDistHungPeer(t *testing.T) {
	pg, st, _ := serve(t, "hang")
	defer st.Close()
	defer pg.Close()
	if err := pg.Barrier(); err != nil {
		t.Fatal(err)
	}
	s := ct.NewScope()
	defer s.Close()
	start := time.Now()
	err := pg.AllReduce(s.Ones(ct.Options{}, 4), ct.DistSum)
	took := time.Since(start)
	if !errors.Is(err, ct.ErrDistTimeout) || !errors.Is(err, ct.ErrDistributed) {
		t.Fatalf("all_reduce with a silent peer: %v, want ErrDistTimeout", err)
	}
	if took < peerTimeout-500*time.Millisecond || took > peerTimeout+6*time.Second {
		t.Errorf("timed out after %v, timeout %v", took, peerTimeout)
	}
	t.Logf("hung peer: %v after %v", err, took.Round(time.Millisecond))
}

// Connecting to a store nobody serves fails within the timeout.
func TestDistStoreUnreachable(t *testing.T) {
	requireGloo(t)
	base := ct.LiveDistHandles()
	start := time.Now()
	// Port 1 (tcpmux) is closed on test machines: connections are refused
	// and retried until the timeout.
	_, err := ct.NewTCPStore(ct.TCPStoreConfig{Host: "127.0.0.1", Port: 1, Timeout: time.Second})
	if !errors.Is(err, ct.ErrDistributed) {
		t.Fatalf("store on a closed port: %v, want ErrDistributed", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %v with a 1 s timeout", took)
	}
	if d := ct.LiveDistHandles() - base; d != 0 {
		t.Errorf("%d handles leaked by a failed constructor", d)
	}
}

// A world of one needs no peer: collectives are the identity.
func TestDistWorldOfOne(t *testing.T) {
	requireGloo(t)
	st, err := ct.NewTCPStore(ct.TCPStoreConfig{Host: "127.0.0.1", Server: true, WorldSize: 1, WaitWorkers: true, Timeout: peerTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pg, err := ct.NewProcessGroup(st, ct.ProcessGroupConfig{Backend: ct.Gloo, Size: 1, Timeout: peerTimeout, Device: ct.CPU, Interface: "lo"})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	s := ct.NewScope()
	defer s.Close()
	x := s.FromSlice([]float32{1, 2})
	for _, err := range []error{pg.AllReduce(x, ct.DistAvg), pg.Broadcast(x, 0), pg.Barrier()} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if g := x.Float32s(); g[0] != 1 || g[1] != 2 {
		t.Errorf("x = %v", g)
	}
	for _, bad := range []struct {
		name string
		err  error
	}{
		{"broadcast root 1 of 1", pg.Broadcast(x, 1)},
		{"non-contiguous tensor", pg.AllReduce(s.Zeros(ct.Options{}, 2, 3).T(), ct.DistSum)},
		{"rank 2 of 2", func() error {
			_, err := ct.NewProcessGroup(st, ct.ProcessGroupConfig{Backend: ct.Gloo, Rank: 2, Size: 2, Timeout: time.Second})
			return err
		}()},
	} {
		if !errors.Is(bad.err, ct.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", bad.name, bad.err)
		}
	}
}

// NCCL on the GPU machine: a world of one on cuda:0 still runs every call
// through NCCL (two ranks would need two GPUs).
func TestDistNCCLWorldOfOne(t *testing.T) {
	needCUDA(t)
	if !ct.NCCL.Available() {
		if os.Getenv("CGOTORCH_REQUIRE_CUDA") != "" {
			t.Fatalf("this CUDA-flavour libcgotorch has no NCCL backend (nccl.h was not found when it was built; %s)", ct.Build())
		}
		t.Skip("no NCCL backend in this build")
	}
	baseT, baseD := ct.LiveTensors(), ct.LiveDistHandles()
	st, err := ct.NewTCPStore(ct.TCPStoreConfig{Host: "127.0.0.1", Server: true, WorldSize: 1, WaitWorkers: true, Timeout: storeTimeout})
	if err != nil {
		t.Fatal(err)
	}
	pg, err := ct.NewProcessGroup(st, ct.ProcessGroupConfig{Backend: ct.NCCL, Size: 1, Timeout: time.Minute, Device: ct.CUDA(0)})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	err = ct.Try(func() {
		s := ct.NewScope()
		defer s.Close()
		x := s.FromSlice([]float32{1, 2, -3}).To(ct.CUDA(0), 0)
		for _, e := range []error{pg.AllReduce(x, ct.DistSum), pg.AllReduce(x, ct.DistAvg), pg.Broadcast(x, 0), pg.Barrier()} {
			if e != nil {
				panic(e)
			}
		}
		if g := x.Float32s(); g[0] != 1 || g[1] != 2 || g[2] != -3 {
			t.Errorf("after sum, average and broadcast over one rank: %v", g)
		}
		xg := s.FromSlice([]float32{1, 2}).To(ct.CUDA(0), 0).SetRequiresGrad(true)
		pg.AllReduceSumAutograd(xg.MulScalar(3)).Sum().Backward()
		if g := xg.Grad(s).Float32s(); g[0] != 3 || g[1] != 3 {
			t.Errorf("gradient through the differentiable all-reduce: %v", g)
		}
		if e := pg.AllReduce(s.Ones(ct.Options{}, 2), ct.DistSum); !errors.Is(e, ct.ErrInvalidArgument) {
			t.Errorf("a CPU tensor on the NCCL group: %v, want ErrInvalidArgument", e)
		}
	})
	if err != nil {
		t.Error(err)
	}
	pg.Close()
	st.Close()
	if d := ct.LiveDistHandles() - baseD; d != 0 {
		t.Errorf("%d store/process-group handles leaked", d)
	}
	if d := ct.LiveTensors() - baseT; d != 0 {
		t.Errorf("%d tensor handles leaked", d)
	}
}

// TestDistPeerProcess is rank 1 of the tests above (it runs only in the
// process they start).
func TestDistPeerProcess(t *testing.T) {
	scenario := os.Getenv(envPeer)
	if scenario == "" {
		t.Skip("rank 1 of the two-process tests; started by them")
	}
	port, err := strconv.Atoi(os.Getenv(envPeerPort))
	if err != nil {
		t.Fatal(err)
	}
	st, pg := join(t, 1, port, peerTimeout)
	switch scenario {
	case "ok":
		if err := collectives(pg, st); err != nil {
			t.Fatal(err)
		}
		pg.Close()
		st.Close()
	case "die":
		if err := pg.Barrier(); err != nil {
			t.Fatal(err)
		}
		os.Exit(3) // no goodbye: the sockets close with the process
	case "hang":
		if err := pg.Barrier(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(4 * peerTimeout) // rank 0 times out meanwhile
		pg.Close()
		st.Close()
	default:
		t.Fatal(strings.TrimSpace("unknown scenario " + scenario))
	}
}
