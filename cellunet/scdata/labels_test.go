package scdata

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// TestLabelOrder checks class ids against sklearn's LabelEncoder on every
// kind of label column (testdata/make_label_golden.py): numeric columns
// and categoricals with numeric categories sort by value (2 before 10),
// string columns by code point ("10" before "2").
func TestLabelOrder(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "numeric_labels_expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]struct {
		Classes []any
		IDs     []int64
	}
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		col, file, key string
		numeric        bool
	}{
		{"int_cat", "numeric_labels.h5ad", "int_cat", true},
		{"int_col", "numeric_labels.h5ad", "int_col", true},
		{"float_col", "numeric_labels.h5ad", "float_col", true},
		{"neg_int", "numeric_labels.h5ad", "neg_int", true},
		{"str_cat", "numeric_labels.h5ad", "str_cat", false},
		{"str_col", "numeric_labels.h5ad", "str_col", false},
		{"plain_Y", "numeric_labels.h5", "", true},
	}
	for _, c := range cases {
		t.Run(c.col, func(t *testing.T) {
			w, ok := want[c.col]
			if !ok {
				t.Fatalf("no expectation for %s", c.col)
			}
			ds, err := Open(filepath.Join("testdata", c.file), OpenOptions{LabelKey: c.key})
			if err != nil {
				t.Fatal(err)
			}
			defer ds.Close()
			if ds.LabelsNumeric() != c.numeric {
				t.Errorf("LabelsNumeric %v, want %v", ds.LabelsNumeric(), c.numeric)
			}
			p, err := Preprocess(ds, PreprocessConfig{})
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Classes) != len(w.Classes) {
				t.Fatalf("classes %q, LabelEncoder %v", p.Classes, w.Classes)
			}
			for i, wc := range w.Classes {
				switch v := wc.(type) {
				case string:
					if p.Classes[i] != v {
						t.Fatalf("classes %q, LabelEncoder %q", p.Classes, w.Classes)
					}
				case float64:
					got, err := strconv.ParseFloat(p.Classes[i], 64)
					if err != nil || got != v {
						t.Fatalf("classes %q, LabelEncoder %v", p.Classes, w.Classes)
					}
				default:
					t.Fatalf("unexpected class %v (%T)", wc, wc)
				}
			}
			if fmt.Sprint(p.Labels) != fmt.Sprint(w.IDs) {
				t.Errorf("ids %v, LabelEncoder %v", p.Labels, w.IDs)
			}
		})
	}
}

func TestSortClasses(t *testing.T) {
	for _, c := range []struct {
		in      []string
		numeric bool
		want    string
	}{
		{[]string{"10", "2", "1"}, false, "[1 10 2]"},
		{[]string{"10", "2", "1"}, true, "[1 2 10]"},
		{[]string{"NaN", "-1.5", "2", "9007199254740993", "9007199254740992"}, true, "[-1.5 2 9007199254740992 9007199254740993 NaN]"},
	} {
		s := append([]string(nil), c.in...)
		SortClasses(s, c.numeric)
		if fmt.Sprint(s) != c.want {
			t.Errorf("SortClasses(%q, %v) = %v, want %s", c.in, c.numeric, s, c.want)
		}
	}
}
