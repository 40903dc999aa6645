package monitor

import (
	"bufio"
	"bytes"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/shirou/gopsutil/v4/mem"
	"github.com/shirou/gopsutil/v4/process"
)

// hostReader reads this process's and the host's memory. It is created once
// by New and reused for every sample; /proc/self/status and /proc/meminfo
// stay open and are re-read with pread (a third of the cost of opening
// them each time).
type hostReader struct {
	proc    *process.Process // nil if gopsutil could not open this process
	status  *os.File         // /proc/self/status, nil if it could not be opened
	meminfo *os.File         // /proc/meminfo, nil if it could not be opened
	buf     []byte
	cgroup  CgroupLimit // resolved once: limits rarely change during a run
}

func newHostReader() *hostReader {
	h := &hostReader{buf: make([]byte, 8192)}
	if p, err := process.NewProcess(int32(os.Getpid())); err == nil {
		h.proc = p
	}
	if f, err := os.Open("/proc/self/status"); err == nil {
		h.status = f
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		h.meminfo = f
	}
	h.cgroup = ReadCgroupLimit()
	return h
}

// close releases the open /proc files.
func (h *hostReader) close() {
	for _, f := range []**os.File{&h.status, &h.meminfo} {
		if *f != nil {
			(*f).Close()
			*f = nil
		}
	}
}

// pread reads a whole /proc file from offset 0 into h.buf.
func (h *hostReader) pread(f *os.File) ([]byte, bool) {
	if f == nil {
		return nil, false
	}
	for {
		n, err := f.ReadAt(h.buf, 0)
		if n < len(h.buf) && (err == nil || err == io.EOF) {
			return h.buf[:n], true
		}
		if err != nil && err != io.EOF {
			return nil, false
		}
		h.buf = make([]byte, 2*len(h.buf))
	}
}

// rss is the resident set size from gopsutil (statm on Linux).
func (h *hostReader) rss() (int64, bool) {
	if h.proc == nil {
		return 0, false
	}
	mi, err := h.proc.MemoryInfo()
	if err != nil || mi == nil {
		return 0, false
	}
	return int64(mi.RSS), true
}

// peakRSS is VmHWM from /proc/self/status (gopsutil leaves HWM at 0 on
// Linux), falling back to getrusage's ru_maxrss.
func (h *hostReader) peakRSS() (int64, bool) {
	if b, ok := h.pread(h.status); ok {
		if v, ok := parseStatusKB(b, "VmHWM:"); ok {
			return v, true
		}
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil && ru.Maxrss > 0 {
		return ru.Maxrss * 1024, true // kilobytes on Linux
	}
	return 0, false
}

// parseStatusKB finds "key   123 kB" in /proc/<pid>/status content and
// returns the value in bytes.
func parseStatusKB(b []byte, key string) (int64, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	line := b[i+len(key):]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	f := strings.Fields(string(line))
	if len(f) == 0 {
		return 0, false
	}
	v, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0, false
	}
	if len(f) > 1 && strings.EqualFold(f[1], "kB") {
		v *= 1024
	}
	return v, true
}

// system is total and available host memory: MemTotal and MemAvailable
// from /proc/meminfo, falling back to gopsutil's mem.VirtualMemory.
func (h *hostReader) system() (total, avail int64, ok bool) {
	if b, ok := h.pread(h.meminfo); ok {
		t, ok1 := parseStatusKB(b, "MemTotal:")
		a, ok2 := parseStatusKB(b, "MemAvailable:")
		if ok1 && ok2 {
			return t, a, true
		}
	}
	vm, err := mem.VirtualMemory()
	if err != nil || vm == nil {
		return 0, 0, false
	}
	return int64(vm.Total), int64(vm.Available), true
}

// CgroupLimit is the memory limit of the cgroup this process runs in.
type CgroupLimit struct {
	// Bytes is the tightest limit on the path from the process's cgroup up
	// to the mounted root; valid only when Limited.
	Bytes int64
	// Limited is false when no limit is set ("max", or v1's huge sentinel)
	// or no cgroup memory controller could be read.
	Limited bool
	// Version is 2 (unified memory.max), 1 (memory.limit_in_bytes) or 0 (none found).
	Version int
	// Path is the file the limit was read from.
	Path string
}

// ReadCgroupLimit resolves this process's cgroup memory limit: cgroup v2
// (memory.max along the unified hierarchy) first, then v1
// (memory.limit_in_bytes of the memory controller). It reads
// /proc/self/cgroup and /proc/self/mountinfo and never fails: an unlimited
// or unknown cgroup gives Limited false.
func ReadCgroupLimit() CgroupLimit {
	cg, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return CgroupLimit{}
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return CgroupLimit{}
	}
	return resolveCgroupLimit(cg, mi, os.ReadFile)
}

type cgroupMount struct {
	root, point string
	v2          bool
	memory      bool // v1 mount carrying the memory controller
}

func parseMountinfo(mi []byte) []cgroupMount {
	var out []cgroupMount
	sc := bufio.NewScanner(bytes.NewReader(mi))
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		f := strings.Fields(sc.Text())
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+3 > len(f) || len(f) < 5 {
			continue
		}
		fstype := f[sep+1]
		switch fstype {
		case "cgroup2":
			out = append(out, cgroupMount{root: f[3], point: f[4], v2: true})
		case "cgroup":
			memory := false
			for _, o := range strings.Split(f[sep+3], ",") {
				if o == "memory" {
					memory = true
				}
			}
			if memory {
				out = append(out, cgroupMount{root: f[3], point: f[4], memory: true})
			}
		}
	}
	return out
}

// resolveCgroupLimit is ReadCgroupLimit on given file contents (for tests).
func resolveCgroupLimit(cgroupFile, mountinfo []byte, read func(string) ([]byte, error)) CgroupLimit {
	mounts := parseMountinfo(mountinfo)
	var v2Path, v1Path string
	hasV2, hasV1 := false, false
	for _, line := range strings.Split(strings.TrimSpace(string(cgroupFile)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			v2Path, hasV2 = parts[2], true
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "memory" {
				v1Path, hasV1 = parts[2], true
			}
		}
	}
	try := func(m cgroupMount, path, file string, parse func([]byte) (int64, bool), version int) (CgroupLimit, bool) {
		rel, err := filepath.Rel(m.root, path)
		if err != nil || strings.HasPrefix(rel, "..") {
			rel = "." // the process's cgroup is outside this mount's root (namespaced): use the root
		}
		best := CgroupLimit{Version: version}
		found := false
		dir := filepath.Join(m.point, rel)
		for {
			b, err := read(filepath.Join(dir, file))
			if err == nil {
				found = true
				if v, lim := parse(b); lim && (!best.Limited || v < best.Bytes) {
					best = CgroupLimit{Bytes: v, Limited: true, Version: version, Path: filepath.Join(dir, file)}
				}
			}
			if dir == m.point || len(dir) <= len(m.point) {
				break
			}
			dir = filepath.Dir(dir)
		}
		return best, found
	}
	if hasV2 {
		for _, m := range mounts {
			if m.v2 {
				if l, ok := try(m, v2Path, "memory.max", parseV2Max, 2); ok && l.Limited {
					return l
				}
			}
		}
	}
	if hasV1 {
		for _, m := range mounts {
			if m.memory {
				if l, ok := try(m, v1Path, "memory.limit_in_bytes", parseV1Limit, 1); ok {
					return l
				}
			}
		}
	}
	return CgroupLimit{}
}

func parseV2Max(b []byte) (int64, bool) {
	s := strings.TrimSpace(string(b))
	if s == "max" || s == "" {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil && v > 0
}

// v1 reports "unlimited" as a page-rounded LONG_MAX (9223372036854771712).
func parseV1Limit(b []byte) (int64, bool) {
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || v <= 0 || v >= math.MaxInt64/2 {
		return 0, false
	}
	return v, true
}
