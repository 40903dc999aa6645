package scdata

import "strconv"

// MakeUnique returns names with duplicates renamed as anndata's
// var_names_make_unique (anndata.utils.make_index_unique, join "-") does:
// the first occurrence keeps its name, later ones get "-1", "-2", ... per
// name, skipping any candidate that already exists in the list (or was
// created before). The input is not modified.
func MakeUnique(names []string) []string {
	out := append([]string(nil), names...)
	seen := make(map[string]bool, len(names))
	dup := false
	for _, n := range names {
		if seen[n] {
			dup = true
		}
		seen[n] = true
	}
	if !dup {
		return out
	}
	first := make(map[string]bool, len(names))
	counter := map[string]int{}
	for i, n := range names {
		if !first[n] {
			first[n] = true
			continue
		}
		for {
			counter[n]++
			cand := n + "-" + strconv.Itoa(counter[n])
			if !seen[cand] {
				seen[cand] = true
				out[i] = cand
				break
			}
		}
	}
	return out
}
