package cgotorch

import (
	"os"
	"strings"
)

// blasRank orders OpenBLAS kernel families by the instruction sets they use.
var blasRank = map[string]int{
	"prescott": 0, "core2": 0, "penryn": 0, "dunnington": 0, "nehalem": 0, "atom": 0, "katmai": 0,
	"coppermine": 0, "northwood": 0, "banias": 0, "opteron": 0, "barcelona": 0, "bobcat": 0,
	"sandybridge": 1, "bulldozer": 1, "piledriver": 1, "steamroller": 1, "excavator": 1,
	"haswell": 2, "zen": 2,
	"skylakex":   3,
	"cooperlake": 4, "sapphirerapids": 4,
}

// OpenBLASAdvice reports a better OpenBLAS kernel family when OpenBLAS
// picked a weaker one than this CPU supports — as OpenBLAS 0.3.21 (Debian
// 12) does on CPU models newer than itself, falling back to its SSE3
// "Prescott" kernels: 4× slower matrix products on an AVX-512 machine. It
// returns "" when OPENBLAS_CORETYPE is already set, OpenBLAS is not in use,
// or the choice is already right. cpuinfo is /proc/cpuinfo's content.
// OpenBLAS reads OPENBLAS_CORETYPE when it loads, so applying the advice
// needs a new process (the CLI re-executes itself).
func OpenBLASAdvice(cpuinfo string) (current, suggested string) {
	current = OpenBLASCore()
	if current == "" || os.Getenv("OPENBLAS_CORETYPE") != "" {
		return current, ""
	}
	flags := map[string]bool{}
	vendor := ""
	for _, line := range strings.Split(cpuinfo, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "flags":
			if len(flags) == 0 {
				for _, f := range strings.Fields(v) {
					flags[f] = true
				}
			}
		case "vendor_id":
			vendor = strings.TrimSpace(v)
		}
	}
	switch {
	case flags["avx512_bf16"] && flags["avx512f"] && vendor == "GenuineIntel":
		suggested = "Cooperlake"
	case flags["avx512f"] && flags["avx512vl"] && flags["avx512bw"] && flags["avx512dq"]:
		suggested = "SkylakeX"
	case flags["avx2"] && flags["fma"] && vendor == "AuthenticAMD":
		suggested = "Zen"
	case flags["avx2"] && flags["fma"]:
		suggested = "Haswell"
	default:
		return current, ""
	}
	cur, ok := blasRank[strings.ToLower(current)]
	if !ok || cur >= blasRank[strings.ToLower(suggested)] {
		return current, ""
	}
	return current, suggested
}
