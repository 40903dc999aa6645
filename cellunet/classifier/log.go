package classifier

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// LogRecord is one log line: window means since the previous line of the
// per-sample cross-entropy and top-1 accuracy, overall and per quartile of
// the noise level (⌊4t/T⌋; with t < 500 of 1000 only q0 and q1 occur), and
// of the validation batches. Means of windows without samples are NaN.
type LogRecord struct {
	Step    int
	Samples int64
	LR      float64
	Loss    float64    // train_loss
	Acc     float64    // train_acc@1
	LossQ   [4]float64 // train_loss_q0..3
	AccQ    [4]float64 // train_acc@1_q0..3
	ValLoss float64    // val_loss
	ValAcc  float64    // val_acc@1
}

// String formats the record as a progress line with the reference's key
// names; quartiles and validation values without samples are left out.
func (r LogRecord) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "step %d samples %d lr %.3g train_loss %.4f train_acc@1 %.4f", r.Step, r.Samples, r.LR, r.Loss, r.Acc)
	for q := range 4 {
		if !math.IsNaN(r.LossQ[q]) {
			fmt.Fprintf(&b, " train_loss_q%d %.4f train_acc@1_q%d %.4f", q, r.LossQ[q], q, r.AccQ[q])
		}
	}
	if !math.IsNaN(r.ValLoss) {
		fmt.Fprintf(&b, " val_loss %.4f val_acc@1 %.4f", r.ValLoss, r.ValAcc)
	}
	return b.String()
}

var csvHeader = []string{"step", "samples", "lr", "train_loss", "train_acc@1",
	"train_loss_q0", "train_loss_q1", "train_loss_q2", "train_loss_q3",
	"train_acc@1_q0", "train_acc@1_q1", "train_acc@1_q2", "train_acc@1_q3", "val_loss", "val_acc@1"}

// csvLog appends records to SaveDir/progress.csv (empty cells for NaN).
type csvLog struct {
	f *os.File
	w *bufio.Writer
}

// openCSV opens progress.csv, appending when resuming and the file exists.
func openCSV(dir string, resume bool) (*csvLog, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "progress.csv")
	flags := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
	header := true
	if st, err := os.Stat(path); resume && err == nil && st.Size() > 0 {
		flags, header = os.O_CREATE|os.O_WRONLY|os.O_APPEND, false
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return nil, err
	}
	c := &csvLog{f: f, w: bufio.NewWriter(f)}
	if header {
		c.w.WriteString(strings.Join(csvHeader, ",") + "\n")
	}
	return c, c.w.Flush()
}

func (c *csvLog) write(r LogRecord) error {
	num := func(v float64) string {
		if math.IsNaN(v) {
			return ""
		}
		return strconv.FormatFloat(v, 'g', 8, 64)
	}
	row := []string{strconv.Itoa(r.Step), strconv.FormatInt(r.Samples, 10), num(r.LR), num(r.Loss), num(r.Acc)}
	for q := range 4 {
		row = append(row, num(r.LossQ[q]))
	}
	for q := range 4 {
		row = append(row, num(r.AccQ[q]))
	}
	row = append(row, num(r.ValLoss), num(r.ValAcc))
	c.w.WriteString(strings.Join(row, ",") + "\n")
	return c.w.Flush()
}

func (c *csvLog) close() {
	if c != nil {
		c.f.Close()
	}
}
