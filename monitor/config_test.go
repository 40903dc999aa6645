package monitor

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestAutoConfig(t *testing.T) {
	const mib = int64(MiB)
	cases := []struct {
		name   string
		total  int64
		row    int
		want   Settings
		warned bool
	}{
		{"RTX 3070 8 GiB", 8192 * mib, 8, Settings{16, 4, true}, false},
		{"8 GB less 5%", 7782 * mib, 8, Settings{16, 4, true}, false},
		{"RTX 3080 10 GiB", 10240 * mib, 8, Settings{16, 4, true}, false},
		{"2080 Ti 11 GiB", 11264 * mib, 8, Settings{16, 4, true}, false},
		{"RTX 3060 12 GiB", 12288 * mib, 12, Settings{32, 8, false}, false},
		{"12 GB less 5%", 11674 * mib, 12, Settings{32, 8, false}, false},
		{"T4 with ECC 15360 MiB", 15360 * mib, 16, Settings{64, 16, false}, false},
		{"V100 16 GB 16160 MiB", 16160 * mib, 16, Settings{64, 16, false}, false},
		{"A100 80 GB", 81920 * mib, 16, Settings{64, 16, false}, false},
		{"6 GiB card", 6144 * mib, 8, Settings{16, 4, true}, true},
		{"unknown (0)", 0, 8, Settings{16, 4, true}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := AutoConfig(c.total)
			if r.Row != c.row || r.Settings != c.want || (r.Warning != "") != c.warned {
				t.Fatalf("AutoConfig(%d MiB) = %+v", c.total/mib, r)
			}
		})
	}
}

func TestMergeSettings(t *testing.T) {
	auto := Settings{BatchSize: 64, Microbatch: 16}
	ip := func(v int) *int { return &v }
	bp := func(v bool) *bool { return &v }
	cases := []struct {
		name  string
		ex    Explicit
		want  Settings
		notes int
	}{
		{"none", Explicit{}, auto, 0},
		{"batch", Explicit{BatchSize: ip(32)}, Settings{32, 16, false}, 1},
		{"batch below microbatch", Explicit{BatchSize: ip(8)}, Settings{8, 8, false}, 2},
		{"explicit microbatch kept", Explicit{BatchSize: ip(8), Microbatch: ip(16)}, Settings{8, 16, false}, 1},
		{"fp16", Explicit{UseFP16: bp(true)}, Settings{64, 16, true}, 1},
		{"same values: no note", Explicit{BatchSize: ip(64), UseFP16: bp(false)}, auto, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, notes := MergeSettings(auto, c.ex)
			if got != c.want || len(notes) != c.notes {
				t.Fatalf("got %+v %q", got, notes)
			}
		})
	}
}

func TestValidateAllocConf(t *testing.T) {
	cases := []struct {
		conf         string
		major, minor int
		err          error
		warnContains []string
	}{
		{"", 2, 5, nil, nil},
		{"expandable_segments:True", 2, 5, nil, nil},
		{"expandable_segments:True", 2, 1, nil, nil},
		{"expandable_segments:True", 2, 0, ErrAllocConfUnsupported, nil},
		{"expandable_segments:True", 1, 13, ErrAllocConfUnsupported, nil},
		{"expandable_segments:False", 1, 13, nil, nil},
		{"max_split_size_mb:64", 1, 13, nil, []string{"last resort"}},
		{"max_split_size_mb:64,expandable_segments:True", 2, 5, ErrAllocConfConflict, []string{"last resort"}},
		{"expandable_segments:true, max_split_size_mb:128", 2, 5, ErrAllocConfConflict, []string{"last resort"}},
		{"max_split_size_mb:10", 2, 5, ErrAllocConfSyntax, nil},
		{"max_split_size_mb", 2, 5, ErrAllocConfSyntax, nil},
		{"foo_bar:1", 2, 5, nil, []string{"unknown option"}},
		{"roundup_power2_divisions:[256:1,512:2,1024:4,>:8],garbage_collection_threshold:0.6", 2, 5, nil, nil},
		{"garbage_collection_threshold:1.5", 2, 5, ErrAllocConfSyntax, nil},
		{"backend:cudaMallocAsync,max_split_size_mb:64", 2, 5, nil, []string{"ignored by backend:cudaMallocAsync"}},
		{"backend:cudaMallocAsync", 1, 13, nil, []string{"may refuse"}},
		{"expandable_segments:True", 0, 0, nil, nil}, // unknown version: not checked
	}
	for _, c := range cases {
		t.Run(c.conf, func(t *testing.T) {
			w, err := ValidateAllocConf(c.conf, c.major, c.minor)
			if !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, c.err)
			}
			for _, s := range c.warnContains {
				if !slices.ContainsFunc(w, func(x string) bool { return strings.Contains(x, s) }) {
					t.Errorf("warnings %q lack %q", w, s)
				}
			}
			if len(c.warnContains) == 0 && len(w) != 0 {
				t.Errorf("unexpected warnings %q", w)
			}
		})
	}
}

func TestParseTorchVersion(t *testing.T) {
	for in, want := range map[string][2]int{"1.13.0": {1, 13}, "2.11.0+cu130": {2, 11}, "2.6": {2, 6}, "2.1.0a0": {2, 1}} {
		ma, mi, ok := ParseTorchVersion(in)
		if !ok || ma != want[0] || mi != want[1] {
			t.Errorf("%q: %d.%d %v", in, ma, mi, ok)
		}
	}
	if _, _, ok := ParseTorchVersion("nightly"); ok {
		t.Error("parsed garbage")
	}
}
