package lzf

// compress is a small greedy LZF encoder used by the tests to produce
// valid streams (round trips, fuzz seeds); it always emits a stream, even
// when that is longer than src.
func compress(src []byte) []byte {
	const (
		maxLit  = 32
		maxOff  = 1 << 13
		maxLen  = 264 // 7 + 255 + 2
		hashLen = 1 << 12
	)
	var table [hashLen]int32 // position+1 of the last occurrence; 0 = none
	out := make([]byte, 0, len(src)+len(src)/32+2)
	lit := make([]byte, 0, maxLit)
	flush := func() {
		if len(lit) > 0 {
			out = append(out, byte(len(lit)-1))
			out = append(out, lit...)
			lit = lit[:0]
		}
	}
	i := 0
	for i < len(src) {
		if i+2 < len(src) {
			h := (int(src[i])<<16 | int(src[i+1])<<8 | int(src[i+2])) * 2654435761 >> 20 & (hashLen - 1)
			ref := int(table[h]) - 1
			table[h] = int32(i + 1)
			if ref >= 0 && i-ref <= maxOff && src[ref] == src[i] && src[ref+1] == src[i+1] && src[ref+2] == src[i+2] {
				n := 3
				for i+n < len(src) && n < maxLen && src[ref+n] == src[i+n] {
					n++
				}
				flush()
				off := i - ref - 1
				l := n - 2
				if l < 7 {
					out = append(out, byte(l<<5|off>>8), byte(off))
				} else {
					out = append(out, byte(7<<5|off>>8), byte(l-7), byte(off))
				}
				i += n
				continue
			}
		}
		lit = append(lit, src[i])
		if len(lit) == maxLit {
			flush()
		}
		i++
	}
	flush()
	return out
}
