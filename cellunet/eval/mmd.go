package eval

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"gonum.org/v1/gonum/floats"
)

// mmdBlock is the tile size of the pairwise-distance computation: one
// tile is mmdBlock² float64 values (512 KiB).
const mmdBlock = 256

// MMDResult is the reference's kernel MMD between two equal-size sets.
type MMDResult struct {
	// MMD is mean(K_XX + K_YY − K_XY − K_YX) over the n×n blocks of the
	// kernel matrix (the biased estimate, diagonal included, as the
	// reference's mmd_rbf).
	MMD float64
	// Bandwidth is the base bandwidth: Σ D / ((2n)² − 2n) / 2², D the
	// squared Euclidean distances of all ordered pairs of the 2n points.
	Bandwidth float64
	// N is the number of points per set.
	N int
}

// MMD computes the reference's MMD (scDiffusion's script_static_eval
// mmd_rbf with kernel_mul 2, kernel_num 5) between the rows of x and y,
// which must have the same number of rows (the reference's block sum
// requires it) and columns: with D the squared Euclidean distances of
// all 2n points, bw = ΣD/((2n)²−2n)/4 and the kernel Σ_{i=0..4}
// exp(−D/(bw·2^i)).
//
// It never forms the [2n, 2n] matrices: ΣD comes in closed form
// (2·2n·Σ‖z−z̄‖²), and the kernel sums are accumulated over tiles of
// mmdBlock × mmdBlock pairs of the upper triangle, with distances from
// ‖a‖² + ‖b‖² − 2a·b on centred points (clamped at 0) and the five
// kernels from one exponential, e = exp(−D/(16·bw)): e + e² + e⁴ + e⁸ +
// e¹⁶. Memory O(mmdBlock²) per worker; time O(n²·d). The sum is
// accumulated per tile row in float64 and combined in a fixed order, so
// the result does not depend on the number of workers.
func MMD(x, y *Dense) (MMDResult, error) {
	n, d := x.Rows, x.Cols
	if y.Rows != n || y.Cols != d {
		return MMDResult{}, fmt.Errorf("MMD needs two sets of the same shape, got %d×%d and %d×%d", x.Rows, x.Cols, y.Rows, y.Cols)
	}
	if n == 0 {
		return MMDResult{}, fmt.Errorf("MMD needs at least one point per set")
	}
	N := 2 * n
	z := newDense(N, d)
	copy(z.Data, x.Data[:n*d])
	copy(z.Data[n*d:], y.Data[:n*d])
	mean := colSums(z)
	floats.Scale(1/float64(N), mean)
	subRow(z, mean)
	sq := rowNorms2(z)
	sumD := 2 * float64(N) * floats.Sum(sq)
	bw := sumD / float64(N*N-N) / 4
	res := MMDResult{Bandwidth: bw, N: n}
	if bw == 0 || math.IsNaN(bw) {
		// All 2n points coincide: every kernel value is 5, so the
		// difference of the block means is 0 (the reference divides by
		// zero here and returns NaN).
		return res, nil
	}
	inv := 1 / (16 * bw)
	nb := (N + mmdBlock - 1) / mmdBlock
	type part struct{ xx, yy, xy float64 }
	parts := make([]part, nb)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := workers(nb); w > 0; w-- {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				bi := int(next.Add(1) - 1)
				if bi >= nb {
					return
				}
				i0, i1 := bi*mmdBlock, min((bi+1)*mmdBlock, N)
				a := &Dense{Rows: i1 - i0, Cols: d, Data: z.Data[i0*d : i1*d]}
				var p part
				for bj := bi; bj < nb; bj++ {
					j0, j1 := bj*mmdBlock, min((bj+1)*mmdBlock, N)
					b := &Dense{Rows: j1 - j0, Cols: d, Data: z.Data[j0*d : j1*d]}
					dot := gemmNT(a, b)
					for ii := 0; ii < a.Rows; ii++ {
						i := i0 + ii
						row := dot.Row(ii)
						jStart := 0
						if bj == bi {
							jStart = ii // upper triangle incl. the diagonal
						}
						for jj := jStart; jj < b.Rows; jj++ {
							j := j0 + jj
							dist := sq[i] + sq[j] - 2*row[jj]
							if dist < 0 || i == j {
								dist = 0
							}
							e := math.Exp(-dist * inv)
							e2 := e * e
							e4 := e2 * e2
							e8 := e4 * e4
							k := e + e2 + e4 + e8 + e8*e8
							w := 2.0
							if i == j {
								w = 1
							}
							switch {
							case i < n && j < n:
								p.xx += w * k
							case i >= n && j >= n:
								p.yy += w * k
							default:
								p.xy += k
							}
						}
					}
				}
				parts[bi] = p
			}
		}()
	}
	wg.Wait()
	var xx, yy, xy float64
	for _, p := range parts {
		xx += p.xx
		yy += p.yy
		xy += p.xy
	}
	res.MMD = (xx + yy - 2*xy) / float64(n) / float64(n)
	return res, nil
}
