package monitor

import (
	"fmt"
	"strconv"
	"strings"
)

// RunContext describes the run's memory-relevant settings for the remedies
// of an out-of-memory report. The zero value gives generic remedies.
type RunContext struct {
	// BatchSize is --batch_size (0: unknown).
	BatchSize int `json:"batch_size"`
	// Microbatch is --microbatch, samples per forward/backward chunk; 0,
	// negative or ≥ BatchSize means no split.
	Microbatch int `json:"microbatch"`
	// UseFP16 and UseBF16 report half-precision training.
	UseFP16 bool `json:"use_fp16"`
	UseBF16 bool `json:"use_bf16"`
	// AllocConf is PYTORCH_CUDA_ALLOC_CONF in effect; "" means read the
	// environment at report time.
	AllocConf string `json:"alloc_conf"`
	// TorchVersion is libtorch's version; "" means cgotorch.Build()'s.
	TorchVersion string `json:"torch_version"`
	// Device is the CUDA device ordinal (informational; the monitor's
	// Options.Device is what it watches).
	Device int `json:"device"`
	// Preflight, if set, is the pre-flight model (X1): remedies then quote
	// predicted peaks.
	Preflight *PreflightResult `json:"-"`
	// SumMicrobatchGrads reports --microbatch_sum: the gradient is the sum
	// of the chunks' mean gradients, so the microbatch is part of the
	// mathematics and changing it changes the update.
	SumMicrobatchGrads bool `json:"microbatch_sum"`
	// Command names the program's command ("train-ae"); Unavailable lists
	// the flags it lacks among those remedies name ("--microbatch",
	// "--use_fp16", "--batch_size"): remedies naming them are left out and
	// the report says the fixed suggestions naming them do not apply.
	Command     string   `json:"command,omitempty"`
	Unavailable []string `json:"unavailable,omitempty"`
}

// has reports whether the command has flag (every flag when Unavailable
// is empty).
func (rc RunContext) has(flag string) bool {
	for _, u := range rc.Unavailable {
		if u == flag {
			return false
		}
	}
	return true
}

// unavailableNote says which of the fixed suggestions' flags the command
// lacks ("" when it has them all).
func (rc RunContext) unavailableNote() string {
	var missing []string
	for _, f := range []string{"--batch_size", "--microbatch", "--use_fp16"} {
		if !rc.has(f) {
			missing = append(missing, f)
		}
	}
	if len(missing) == 0 {
		return ""
	}
	cmd := rc.Command
	if cmd == "" {
		cmd = "this command"
	}
	return fmt.Sprintf("%s has no %s: the suggestions naming it apply to the diffusion training (train), not here", cmd, strings.Join(missing, " or "))
}

// effectiveMicrobatch is the chunk size actually used.
func (rc RunContext) effectiveMicrobatch() int {
	if rc.Microbatch > 0 && (rc.BatchSize <= 0 || rc.Microbatch < rc.BatchSize) {
		return rc.Microbatch
	}
	return rc.BatchSize
}

// NextMicrobatch is the microbatch of the next larger microbatch count
// (memory.md A2: more, smaller chunks per batch): the largest divisor of
// the batch size below the current chunk (32/8 → 4, 48/12 → 8), or half
// the chunk when the batch size is unknown; 0 if there is none.
func (rc RunContext) NextMicrobatch() int {
	smaller := rc.smallerMicrobatches()
	if len(smaller) == 0 {
		return 0
	}
	return smaller[0]
}

// smallerMicrobatches lists the valid microbatches below the current one,
// largest first.
func (rc RunContext) smallerMicrobatches() []int {
	cur := rc.effectiveMicrobatch()
	if cur <= 1 {
		return nil
	}
	if rc.BatchSize <= 0 {
		var out []int
		for d := cur / 2; d >= 1; d /= 2 {
			out = append(out, d)
		}
		return out
	}
	var out []int
	for d := cur - 1; d >= 1; d-- {
		if rc.BatchSize%d == 0 {
			out = append(out, d)
		}
	}
	return out
}

// NextBatchSize is the next step of the guide's sequence 64 → 32 → 16 → 8
// (U19): halving above 64 and below 8, else the next smaller value of the
// sequence; 0 if the batch is 1 or unknown.
func (rc RunContext) NextBatchSize() int {
	b := rc.BatchSize
	if b > 64 {
		return b / 2
	}
	for _, s := range []int{32, 16, 8} {
		if s < b {
			return s
		}
	}
	if b > 1 {
		return b / 2
	}
	return 0
}

// Remedy is one concrete, ranked action.
type Remedy struct {
	// Action is what to do, e.g. "--microbatch 8 → 4".
	Action string `json:"action"`
	// Why adds the effect or a caveat, e.g. "keeps --batch_size 32".
	Why string `json:"why,omitempty"`
}

// String is the action followed by the reason in parentheses.
func (r Remedy) String() string {
	if r.Why == "" {
		return r.Action
	}
	return r.Action + " (" + r.Why + ")"
}

// Remedies ranks concrete remedies for a diagnosis given the run's settings
// (memory.md X4): the cause's own fix first, then the general ones. A
// remedy naming a flag of rc.Unavailable is left out.
func Remedies(d Diagnosis, rc RunContext) []Remedy {
	var out []Remedy
	add := func(r Remedy, ok bool) {
		if !ok {
			return
		}
		if flag, _, _ := strings.Cut(r.Action, " "); strings.HasPrefix(flag, "--") && !rc.has(flag) {
			return
		}
		out = append(out, r)
	}
	mbRemedy := func() (Remedy, bool) {
		next := rc.NextMicrobatch()
		if next == 0 {
			return Remedy{}, false
		}
		// With the pre-flight model, take the largest smaller microbatch
		// predicted to fit (the next one may not be enough).
		if pf := rc.Preflight; pf != nil && d.LimitBytes > 0 {
			for _, mb := range rc.smallerMicrobatches() {
				if _, _, hi := pf.Predict(mb); hi <= d.LimitBytes {
					next = mb
					break
				}
			}
		}
		cur := rc.effectiveMicrobatch()
		r := Remedy{Action: fmt.Sprintf("--microbatch %d → %d", cur, next)}
		switch {
		case rc.BatchSize > 0 && rc.SumMicrobatchGrads:
			r.Why = fmt.Sprintf("same --batch_size %d in %d chunks; with --microbatch_sum the gradient is the sum over chunks, so it becomes %d× the batch mean instead of %d×: the update changes",
				rc.BatchSize, rc.BatchSize/next, rc.BatchSize/next, max(rc.BatchSize/max(cur, 1), 1))
		case rc.BatchSize > 0:
			r.Why = fmt.Sprintf("same --batch_size %d in %d chunks: the mathematics is unchanged", rc.BatchSize, rc.BatchSize/next)
		}
		if pf := rc.Preflight; pf != nil {
			pred, _, _ := pf.Predict(next)
			r.Why = joinWhy(r.Why, fmt.Sprintf("predicted peak %s", fmtSize(pred)))
			if d.LimitBytes > 0 {
				r.Why += fmt.Sprintf(" of %s", fmtSize(d.LimitBytes))
			}
		}
		return r, true
	}
	bsRemedy := func() (Remedy, bool) {
		next := rc.NextBatchSize()
		if next == 0 {
			return Remedy{}, false
		}
		why := "changes the global batch: revisit the learning rate"
		if mb := rc.effectiveMicrobatch(); mb > next {
			why += fmt.Sprintf("; the microbatch becomes %d", next)
		}
		return Remedy{Action: fmt.Sprintf("--batch_size %d → %d", rc.BatchSize, next), Why: why}, true
	}
	fp16 := Remedy{Action: "--use_fp16", Why: "half-precision activations roughly halve activation memory"}
	needFP16 := !rc.UseFP16 && !rc.UseBF16
	switch d.Cause {
	case CauseHost:
		add(mbRemedy())
		add(bsRemedy())
		add(Remedy{Action: "free host memory or raise the limit", Why: "cgroup/container limit, or cgotorch's CPU allocation limit"}, true)
		add(Remedy{Action: "check the memory-monitor log for growth", Why: "a rising RSS or live-tensor count points to a leak; U19 step 1"}, true)
		return out
	case CauseFragmentation:
		add(allocConfRemedy(rc))
		add(mbRemedy())
		add(fp16, needFP16)
	case CauseCoTenant:
		if len(d.Others) == 0 {
			add(Remedy{Action: "free the GPU", Why: "memory is used outside this allocator: look for other processes with nvidia-smi"}, true)
		}
		for i, o := range d.Others {
			if i == 3 {
				break
			}
			if o.UsedKnown {
				add(Remedy{Action: fmt.Sprintf("stop PID %d (%s)", o.PID, fmtSize(o.UsedBytes)), Why: "another process on this GPU"}, true)
			} else {
				add(Remedy{Action: fmt.Sprintf("stop PID %d", o.PID), Why: "another process on this GPU"}, true)
			}
		}
		add(mbRemedy())
		add(fp16, needFP16)
	case CauseOverhead:
		add(Remedy{Action: "reduce memory outside the allocator", Why: fmt.Sprintf("%s beyond the cache: e.g. CUBLAS_WORKSPACE_CONFIG=:4096:8, "+
			"fewer CUDA libraries or streams", fmtSize(d.OverheadBytes))}, true)
		add(mbRemedy())
		add(fp16, needFP16)
	default:
		add(mbRemedy())
		add(fp16, needFP16)
	}
	add(bsRemedy())
	return out
}

func joinWhy(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// allocConfRemedy suggests the allocator setting against fragmentation:
// expandable_segments:True on libtorch ≥ 2.1 (dropping max_split_size_mb,
// never both), max_split_size_mb before.
func allocConfRemedy(rc RunContext) (Remedy, bool) {
	conf := rc.AllocConf
	major, minor, ok := ParseTorchVersion(rc.TorchVersion)
	opts, err := ParseAllocConf(conf)
	if err != nil {
		opts = nil
	}
	var keep []string
	split := 0
	expandable := false
	for _, o := range opts {
		switch o.Key {
		case "max_split_size_mb":
			split, _ = strconv.Atoi(o.Value)
			continue
		case "expandable_segments":
			expandable = strings.EqualFold(o.Value, "true")
			continue
		}
		keep = append(keep, o.Key+":"+o.Value)
	}
	if ok && (major > 2 || (major == 2 && minor >= 1)) {
		if expandable {
			return Remedy{}, false
		}
		v := strings.Join(append(keep, "expandable_segments:True"), ",")
		why := "libtorch ≥ 2.1"
		if split > 0 {
			why += "; drop max_split_size_mb"
		}
		return Remedy{Action: "PYTORCH_CUDA_ALLOC_CONF=" + v, Why: why + "; or --alloc_conf " + v}, true
	}
	n := 128
	if split > 0 {
		if split/2 <= 20 {
			return Remedy{}, false
		}
		n = split / 2
	}
	v := strings.Join(append(keep, "max_split_size_mb:"+strconv.Itoa(n)), ",")
	return Remedy{Action: "PYTORCH_CUDA_ALLOC_CONF=" + v, Why: "libtorch < 2.1 has no expandable_segments; a last resort that can cost speed; or --alloc_conf " + v}, true
}
