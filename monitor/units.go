package monitor

import (
	"fmt"
	"strconv"
)

// MiB is 2^20 bytes, the unit of every "MB" and "MiB" this package prints.
const MiB = 1 << 20

// GiB is 2^30 bytes.
const GiB = 1 << 30

// mb converts bytes to MiB.
func mb(b int64) float64 { return float64(b) / MiB }

// fmtMB formats bytes as MiB with one decimal and the unit glued on, as in
// the user guide's Step line ("2048.5MB").
func fmtMB(b int64) string { return strconv.FormatFloat(mb(b), 'f', 1, 64) + "MB" }

// fmtMiB formats bytes as "2048.5 MiB" for explanatory lines.
func fmtMiB(b int64) string { return strconv.FormatFloat(mb(b), 'f', 1, 64) + " MiB" }

// fmtSize formats bytes as GiB above 1 GiB and MiB otherwise, with one decimal.
func fmtSize(b int64) string {
	if b >= GiB || b <= -GiB {
		return fmt.Sprintf("%.1f GiB", float64(b)/GiB)
	}
	return fmtMiB(b)
}
