package scdata

import (
	"sort"

	"github.com/scdiffusion/gotorch-train/cellunet/scdata/npz"
)

// writeNPZ writes 1-D arrays (sorted by key) with package npz.
func writeNPZ(path string, arrays map[string]any) error {
	keys := make([]string, 0, len(arrays))
	for k := range arrays {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var named []npz.Named
	for _, k := range keys {
		a, err := npz.NewArray(arrays[k])
		if err != nil {
			return err
		}
		named = append(named, npz.Named{Key: k, Array: a})
	}
	return npz.Write(path, named...)
}
