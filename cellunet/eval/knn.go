package eval

import (
	"fmt"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata"
)

// knnBlock is the number of test rows whose distances to all training
// rows are computed at once ([train, knnBlock] float64).
const knnBlock = 256

// Detection is how well a classifier tells real from generated cells on
// held-out cells: accuracy 0.5 and AUC 0.5 mean indistinguishable, 1.0
// means every cell is recognised.
type Detection struct {
	Accuracy float64 `json:"accuracy"`
	AUC      float64 `json:"auc"`
	// Train and Test are the numbers of cells fitted and scored.
	Train int `json:"train_cells"`
	Test  int `json:"test_cells"`
}

// KNNDetect fits a k-nearest-neighbour classifier (Euclidean distance,
// uniform weights: sklearn's KNeighborsClassifier defaults) on the rows
// train of x with classes real[i], and scores the rows test: the
// probability of "real" is the fraction of real cells among the k nearest
// training cells, the prediction is "real" when that fraction exceeds ½
// (a tie goes to "generated", the first class, as sklearn's argmax). Ties
// in distance are broken by the order of train (a random permutation
// when it comes from split). Distances use ‖a‖² + ‖b‖² − 2a·b with the
// test rows densified knnBlock at a time: memory O(knnBlock·(G + train)).
func KNNDetect(x *scdata.CSR, real []bool, train, test []int, k int) (Detection, error) {
	if k < 1 || k > len(train) {
		return Detection{}, fmt.Errorf("kNN: k = %d with %d training cells", k, len(train))
	}
	if len(test) == 0 {
		return Detection{}, fmt.Errorf("kNN: no test cells")
	}
	tr := selectRows(x, train)
	trNorm := csrRowNorms2(tr)
	prob := make([]float64, len(test))
	pred := make([]bool, len(test))
	truth := make([]bool, len(test))
	for b0 := 0; b0 < len(test); b0 += knnBlock {
		b1 := min(b0+knnBlock, len(test))
		blk := denseRows(x, test[b0:b1]) // [b, G]
		teNorm := rowNorms2(blk)
		dots := mulCSR(tr, transpose(blk)) // [train, b]
		nb := b1 - b0
		parallelFor(nb, func(lo, hi int) {
			nbrDist := make([]float64, k)
			nbrPos := make([]int, k)
			for c := lo; c < hi; c++ {
				m := 0 // neighbours held, sorted by (distance, position)
				for p := range train {
					d := trNorm[p] + teNorm[c] - 2*dots.Data[p*nb+c]
					if d < 0 {
						d = 0
					}
					if m == k && d >= nbrDist[k-1] {
						continue // equal distance: the earlier position stays
					}
					q := m
					if m < k {
						m++
					} else {
						q = k - 1
					}
					for q > 0 && nbrDist[q-1] > d {
						nbrDist[q], nbrPos[q] = nbrDist[q-1], nbrPos[q-1]
						q--
					}
					nbrDist[q], nbrPos[q] = d, p
				}
				votes := 0
				for _, p := range nbrPos[:m] {
					if real[train[p]] {
						votes++
					}
				}
				i := b0 + c
				prob[i] = float64(votes) / float64(k)
				pred[i] = 2*votes > k
				truth[i] = real[test[i]]
			}
		})
	}
	return Detection{Accuracy: Accuracy(pred, truth), AUC: AUC(prob, truth), Train: len(train), Test: len(test)}, nil
}
