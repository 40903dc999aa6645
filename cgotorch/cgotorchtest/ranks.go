package cgotorchtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// EnvRankTest marks a process started by RunRanks.
const EnvRankTest = "CGOTORCHTEST_RANK_PROCESS"

// IsRankProcess reports whether this test process is a rank started by
// RunRanks (rank tests skip otherwise).
func IsRankProcess() bool { return os.Getenv(EnvRankTest) != "" }

// RunRanks runs the test named test of this test binary as size processes
// of a data-parallel world, as torchrun would start them: RANK, WORLD_SIZE,
// LOCAL_RANK, MASTER_ADDR=127.0.0.1 and MASTER_PORT (a free port) set, one
// intra-op thread, plus env. It waits for all of them (up to limit, then
// kills them) and returns each rank's output; a rank that fails fails tb.
func RunRanks(tb testing.TB, size int, test string, env []string, limit time.Duration) []string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmds := make([]*exec.Cmd, size)
	outs := make([]bytes.Buffer, size)
	done := make(chan int, size)
	errs := make([]error, size)
	for r := range cmds {
		c := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1", "-test.v")
		c.Env = append(append(os.Environ(), env...), EnvRankTest+"=1", "RANK="+strconv.Itoa(r),
			"WORLD_SIZE="+strconv.Itoa(size), "LOCAL_RANK="+strconv.Itoa(r), "MASTER_ADDR=127.0.0.1",
			"MASTER_PORT="+strconv.Itoa(port), "OMP_NUM_THREADS=1")
		c.Stdout, c.Stderr = &outs[r], &outs[r]
		if err := c.Start(); err != nil {
			tb.Fatal(err)
		}
		cmds[r] = c
		go func(r int) { errs[r] = c.Wait(); done <- r }(r)
	}
	deadline := time.After(limit)
	for finished := 0; finished < size; finished++ {
		select {
		case <-done:
		case <-deadline:
			for _, c := range cmds {
				_ = c.Process.Kill()
			}
			for ; finished < size; finished++ { // the kills end the rest
				<-done
			}
			tb.Fatalf("ranks did not finish within %v", limit)
		}
	}
	res := make([]string, size)
	for r := range cmds {
		res[r] = outs[r].String()
		if errs[r] != nil {
			tb.Errorf("rank %d: %v\n%s", r, errs[r], res[r])
		}
	}
	if tb.Failed() {
		tb.FailNow()
	}
	return res
}

// RankResult reads the result file rank wrote in dir (see RankFile).
func RankResult(tb testing.TB, dir string, rank int, out string) []byte {
	tb.Helper()
	b, err := os.ReadFile(RankFile(dir, rank))
	if err != nil {
		tb.Fatalf("rank %d wrote no result: %v\n%s", rank, err, out)
	}
	return b
}

// RankFile names the result file of rank in dir.
func RankFile(dir string, rank int) string { return fmt.Sprintf("%s/rank%d.json", dir, rank) }
