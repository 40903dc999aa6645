package monitor

import (
	"io/fs"
	"testing"
)

func TestParseStatusKB(t *testing.T) {
	status := []byte("Name:\tmonitor.test\nVmPeak:\t 1000 kB\nVmHWM:\t  184320 kB\nVmRSS:\t  180000 kB\n")
	if v, ok := parseStatusKB(status, "VmHWM:"); !ok || v != 184320*1024 {
		t.Fatalf("VmHWM = %d, %v", v, ok)
	}
	if _, ok := parseStatusKB(status, "VmSwap:"); ok {
		t.Fatal("absent key found")
	}
}

func TestHostReaderReadsThisProcess(t *testing.T) {
	h := newHostReader()
	rss, ok := h.rss()
	if !ok || rss <= 0 {
		t.Fatalf("rss %d %v", rss, ok)
	}
	hwm, ok := h.peakRSS()
	if !ok || hwm < rss/2 {
		t.Fatalf("VmHWM %d %v (rss %d)", hwm, ok, rss)
	}
	total, avail, ok := h.system()
	if !ok || total <= 0 || avail <= 0 || avail > total {
		t.Fatalf("system %d %d %v", total, avail, ok)
	}
	_ = ReadCgroupLimit() // must not fail on this host, whatever it finds
}

func TestResolveCgroupLimit(t *testing.T) {
	const hybridMounts = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	const v2Mounts = `30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
`
	const nsMounts = `30 23 0:26 /kubepods/pod1 /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw
`
	cases := []struct {
		name    string
		cgroup  string
		mounts  string
		files   map[string]string
		want    CgroupLimit
		limited bool
	}{
		{"v2 limited at leaf", "0::/user.slice/job\n", v2Mounts, map[string]string{
			"/sys/fs/cgroup/user.slice/job/memory.max": "4294967296\n",
			"/sys/fs/cgroup/user.slice/memory.max":     "max\n",
		}, CgroupLimit{Bytes: 4 << 30, Limited: true, Version: 2, Path: "/sys/fs/cgroup/user.slice/job/memory.max"}, true},
		{"v2 tighter parent", "0::/a/b\n", v2Mounts, map[string]string{
			"/sys/fs/cgroup/a/b/memory.max": "8589934592\n",
			"/sys/fs/cgroup/a/memory.max":   "2147483648\n",
		}, CgroupLimit{Bytes: 2 << 30, Limited: true, Version: 2, Path: "/sys/fs/cgroup/a/memory.max"}, true},
		{"v2 namespaced root", "0::/\n", nsMounts, map[string]string{
			"/sys/fs/cgroup/memory.max": "1073741824\n",
		}, CgroupLimit{Bytes: 1 << 30, Limited: true, Version: 2, Path: "/sys/fs/cgroup/memory.max"}, true},
		{"v2 unlimited", "0::/x\n", v2Mounts, map[string]string{"/sys/fs/cgroup/x/memory.max": "max\n"}, CgroupLimit{}, false},
		{"hybrid v1 unlimited (this VM)", "4:memory:/process_api/abc\n0::/\n", hybridMounts, map[string]string{
			"/sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes": "9223372036854771712\n",
			"/sys/fs/cgroup/memory/process_api/memory.limit_in_bytes":     "9223372036854771712\n",
			"/sys/fs/cgroup/memory/memory.limit_in_bytes":                 "9223372036854771712\n",
		}, CgroupLimit{Version: 1}, false},
		{"hybrid v1 limited", "4:memory:/docker/abc\n0::/\n", hybridMounts, map[string]string{
			"/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "536870912\n",
		}, CgroupLimit{Bytes: 512 << 20, Limited: true, Version: 1, Path: "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes"}, true},
		{"no cgroup files", "0::/\n", v2Mounts, map[string]string{}, CgroupLimit{}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			read := func(p string) ([]byte, error) {
				if v, ok := c.files[p]; ok {
					return []byte(v), nil
				}
				return nil, fs.ErrNotExist
			}
			got := resolveCgroupLimit([]byte(c.cgroup), []byte(c.mounts), read)
			if got.Limited != c.limited || (c.limited && got != c.want) {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
}
