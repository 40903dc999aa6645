package monitor

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Settings are the memory-relevant training flags: the global batch per
// optimiser step, the microbatch (samples per forward/backward chunk,
// gradients accumulated over batch_size/microbatch chunks) and half precision.
type Settings struct {
	// BatchSize is --batch_size, Microbatch --microbatch, UseFP16 --use_fp16.
	BatchSize  int  `json:"batch_size"`
	Microbatch int  `json:"microbatch"`
	UseFP16    bool `json:"use_fp16"`
}

// ConfigRow is one row of the user guide's GPU-memory table (memory.md U20).
type ConfigRow struct {
	// NominalGiB is the card's nominal size ("8 GB" = 8 GiB of DRAM).
	NominalGiB int
	Settings
}

// configTable is the U20 table, smallest card first.
var configTable = [...]ConfigRow{
	{8, Settings{BatchSize: 16, Microbatch: 4, UseFP16: true}},
	{12, Settings{BatchSize: 32, Microbatch: 8}},
	{16, Settings{BatchSize: 64, Microbatch: 16}},
}

// ConfigTable returns the U20 table, smallest card first (a copy).
func ConfigTable() []ConfigRow { return append([]ConfigRow(nil), configTable[:]...) }

// AutoConfigTolerance is how far below its nominal size a card's reported
// total may be and still get that row. Cards report less than their label
// (driver and ECC reservations): a V100 "16 GB" reports 15.8 GiB, a T4
// with ECC on 15.0 GiB (6.25 % less), hence 6.5 % rather than a round 5 %.
const AutoConfigTolerance = 0.065

// AutoConfigResult is the row AutoConfig picked for a device.
type AutoConfigResult struct {
	Settings
	// Row is the nominal size of the chosen row in GiB (8, 12 or 16).
	Row int `json:"row_gib"`
	// TotalBytes is the device total it was chosen for.
	TotalBytes int64 `json:"total_bytes"`
	// Warning is non-empty for cards below the table (A6).
	Warning string `json:"warning,omitempty"`
}

// AutoConfig picks the U20 row for a device with totalBytes of memory (NVML
// total): the largest row whose nominal size, less AutoConfigTolerance, the
// card reaches. Cards below the 8 GB row get that row and a warning that
// points to the pre-flight check and --microbatch auto (A6).
func AutoConfig(totalBytes int64) AutoConfigResult {
	res := AutoConfigResult{TotalBytes: totalBytes}
	chosen := -1
	for i, r := range configTable {
		if float64(totalBytes) >= float64(r.NominalGiB)*GiB*(1-AutoConfigTolerance) {
			chosen = i
		}
	}
	if chosen < 0 {
		chosen = 0
		res.Warning = fmt.Sprintf("GPU has %s, below the smallest configuration (8 GB): using the 8 GB settings "+
			"(batch_size 16, microbatch 4, fp16); check them with the pre-flight memory prediction or use --microbatch auto",
			fmtSize(totalBytes))
	}
	res.Settings, res.Row = configTable[chosen].Settings, configTable[chosen].NominalGiB
	return res
}

// Explicit holds the flags the user set on the command line; nil means not
// set (for urfave/cli, set a field when c.IsSet(name)). Set flags override
// the auto_config row.
type Explicit struct {
	// BatchSize, Microbatch and UseFP16 mirror Settings.
	BatchSize  *int
	Microbatch *int
	UseFP16    *bool
}

// MergeSettings applies explicit flags over the auto-configured settings.
// If the result has a microbatch larger than the batch (an explicit smaller
// batch_size with the row's microbatch), the microbatch becomes the batch
// size, and a note says so. Notes describe each override for the log.
func MergeSettings(auto Settings, ex Explicit) (Settings, []string) {
	s := auto
	var notes []string
	if ex.BatchSize != nil && *ex.BatchSize != s.BatchSize {
		notes = append(notes, fmt.Sprintf("--batch_size %d overrides auto_config's %d", *ex.BatchSize, s.BatchSize))
		s.BatchSize = *ex.BatchSize
	}
	if ex.Microbatch != nil && *ex.Microbatch != s.Microbatch {
		notes = append(notes, fmt.Sprintf("--microbatch %d overrides auto_config's %d", *ex.Microbatch, s.Microbatch))
		s.Microbatch = *ex.Microbatch
	}
	if ex.UseFP16 != nil && *ex.UseFP16 != s.UseFP16 {
		notes = append(notes, fmt.Sprintf("--use_fp16=%t overrides auto_config's %t", *ex.UseFP16, s.UseFP16))
		s.UseFP16 = *ex.UseFP16
	}
	if ex.Microbatch == nil && s.BatchSize > 0 && s.Microbatch > s.BatchSize {
		notes = append(notes, fmt.Sprintf("microbatch %d exceeds batch_size %d: using %d", s.Microbatch, s.BatchSize, s.BatchSize))
		s.Microbatch = s.BatchSize
	}
	return s, notes
}

// Errors of ValidateAllocConf; the returned error wraps one of them.
var (
	// ErrAllocConfConflict: expandable_segments:True together with
	// max_split_size_mb (asserts and unbounded reserved growth, S8).
	ErrAllocConfConflict = errors.New("monitor: expandable_segments:True cannot be combined with max_split_size_mb (asserts and unbounded reserved growth, pytorch/pytorch#123548)")
	// ErrAllocConfUnsupported: an option the running libtorch cannot parse
	// for certain (expandable_segments before 2.1).
	ErrAllocConfUnsupported = errors.New("monitor: allocator option not supported by this libtorch")
	// ErrAllocConfSyntax: not of the form opt:val,opt:val.
	ErrAllocConfSyntax = errors.New("monitor: bad allocator settings")
)

// allocOption describes an option of the caching allocator (S8).
type allocOption struct {
	major, minor int  // first libtorch line that knows it (approximate where S8 says so)
	nativeOnly   bool // ignored by backend:cudaMallocAsync
}

// allocOptions lists the options of S8 with the libtorch line that
// introduced them (major 0: version unknown, not checked).
var allocOptions = map[string]allocOption{
	"max_split_size_mb":             {1, 10, true},
	"roundup_power2_divisions":      {1, 12, true},
	"garbage_collection_threshold":  {1, 12, true},
	"backend":                       {2, 0, false},
	"expandable_segments":           {2, 1, true},
	"max_non_split_rounding_mb":     {2, 6, true},
	"release_lock_on_cudamalloc":    {0, 0, true},
	"pinned_use_cuda_host_register": {0, 0, false},
	"pinned_num_register_threads":   {0, 0, false},
	"per_process_memory_fraction":   {0, 0, false},
	"throw_on_cudamalloc_oom":       {0, 0, false},
}

// AllocOption is one opt:val pair of PYTORCH_CUDA_ALLOC_CONF.
type AllocOption struct {
	// Key is the option name, Value its text ("True", "64", "[256:1,>:8]").
	Key, Value string
}

// ParseAllocConf splits "opt:val,opt:val" into options, keeping commas
// inside brackets (roundup_power2_divisions:[256:1,512:2,>:8]).
func ParseAllocConf(conf string) ([]AllocOption, error) {
	var out []AllocOption
	depth, start := 0, 0
	var parts []string
	for i, c := range conf {
		switch c {
		case '[':
			depth++
		case ']':
			depth--
		case ',':
			if depth == 0 {
				parts = append(parts, conf[start:i])
				start = i + 1
			}
		}
	}
	parts = append(parts, conf[start:])
	for _, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		k, v, ok := strings.Cut(p, ":")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("%w: %q is not opt:value", ErrAllocConfSyntax, p)
		}
		out = append(out, AllocOption{k, v})
	}
	return out, nil
}

// ValidateAllocConf checks a PYTORCH_CUDA_ALLOC_CONF value against the
// running libtorch version (memory.md S8, U10, A7). It returns warnings
// (max_split_size_mb is a last resort that can cost speed; unknown options,
// which libtorch itself may reject; options newer than the version;
// native-only options under cudaMallocAsync) and an error for what must be
// refused: expandable_segments:True with max_split_size_mb
// (ErrAllocConfConflict), expandable_segments before 2.1
// (ErrAllocConfUnsupported), malformed values (ErrAllocConfSyntax). A
// torchMajor of 0 skips the version checks.
func ValidateAllocConf(conf string, torchMajor, torchMinor int) (warnings []string, err error) {
	opts, err := ParseAllocConf(conf)
	if err != nil {
		return nil, err
	}
	versionKnown := torchMajor > 0
	older := func(o allocOption) bool {
		return versionKnown && o.major > 0 && (torchMajor < o.major || (torchMajor == o.major && torchMinor < o.minor))
	}
	seen := map[string]string{}
	for _, o := range opts {
		seen[o.Key] = o.Value
		info, known := allocOptions[o.Key]
		if !known {
			warnings = append(warnings, fmt.Sprintf("unknown option %q (libtorch may refuse it when the allocator starts)", o.Key))
			continue
		}
		switch o.Key {
		case "max_split_size_mb":
			n, e := strconv.Atoi(o.Value)
			if e != nil || n <= 20 {
				return warnings, fmt.Errorf("%w: max_split_size_mb:%s must be an integer above 20", ErrAllocConfSyntax, o.Value)
			}
			warnings = append(warnings, fmt.Sprintf("max_split_size_mb:%d is a last resort against fragmentation "+
				"and can cost substantial speed; on libtorch ≥ 2.1 prefer expandable_segments:True", n))
		case "expandable_segments":
			if !strings.EqualFold(o.Value, "true") && !strings.EqualFold(o.Value, "false") {
				return warnings, fmt.Errorf("%w: expandable_segments:%s must be True or False", ErrAllocConfSyntax, o.Value)
			}
			if strings.EqualFold(o.Value, "true") && older(info) {
				return warnings, fmt.Errorf("%w: expandable_segments needs libtorch ≥ 2.1, running %d.%d", ErrAllocConfUnsupported, torchMajor, torchMinor)
			}
		case "garbage_collection_threshold":
			t, e := strconv.ParseFloat(o.Value, 64)
			if e != nil || t <= 0 || t >= 1 {
				return warnings, fmt.Errorf("%w: garbage_collection_threshold:%s must be in (0, 1)", ErrAllocConfSyntax, o.Value)
			}
		case "backend":
			if o.Value != "native" && o.Value != "cudaMallocAsync" {
				return warnings, fmt.Errorf("%w: backend:%s must be native or cudaMallocAsync", ErrAllocConfSyntax, o.Value)
			}
		}
		if older(info) && o.Key != "expandable_segments" {
			warnings = append(warnings, fmt.Sprintf("allocator option %s appeared around libtorch %d.%d; running %d.%d may refuse it",
				o.Key, info.major, info.minor, torchMajor, torchMinor))
		}
	}
	if v, ok := seen["expandable_segments"]; ok && strings.EqualFold(v, "true") {
		if _, both := seen["max_split_size_mb"]; both {
			return warnings, ErrAllocConfConflict
		}
	}
	if seen["backend"] == "cudaMallocAsync" {
		for _, o := range opts {
			if allocOptions[o.Key].nativeOnly {
				warnings = append(warnings, fmt.Sprintf("allocator option %s is ignored by backend:cudaMallocAsync", o.Key))
			}
		}
	}
	return warnings, nil
}

// ParseTorchVersion reads "2.11.0+cu130" or "1.13.0" into major and minor;
// ok is false if it cannot.
func ParseTorchVersion(v string) (major, minor int, ok bool) {
	parts := strings.SplitN(strings.TrimSpace(v), ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	ma, e1 := strconv.Atoi(parts[0])
	mi, e2 := strconv.Atoi(strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	if e1 != nil || e2 != nil {
		return 0, 0, false
	}
	return ma, mi, true
}

// EffectiveAllocConf is the allocator configuration libtorch reads:
// PYTORCH_CUDA_ALLOC_CONF, else PYTORCH_ALLOC_CONF (newest 2.x).
func EffectiveAllocConf() string {
	if v := os.Getenv("PYTORCH_CUDA_ALLOC_CONF"); v != "" {
		return v
	}
	return os.Getenv("PYTORCH_ALLOC_CONF")
}
