package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	ct "github.com/scdiffusion/gotorch-train/cgotorch"
	"github.com/scdiffusion/gotorch-train/monitor"
)

// version is the program's version. A release build sets it with
//
//	go build -ldflags "-X main.version=v1.2.3" ./cmd/gotorch-train
//
// The commit comes from the build information Go records from git, or,
// where that is off (GOFLAGS=-buildvcs=false), from
// -ldflags "-X main.commit=..." (make build sets it).
var (
	version = "0.1.0-dev"
	commit  = ""
)

// programVersion is "gotorch-train 0.1.0-dev (commit 7dc3401, modified)":
// the version, and the commit when the binary was built from a git
// checkout ("commit unknown" otherwise, e.g. in a test binary).
func programVersion() string {
	commit, modified := commit, false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" && v != "(devel)" && version == "0.1.0-dev" {
			commit = v // a module version (go install pkg@version)
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
				if len(commit) > 12 {
					commit = commit[:12]
				}
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	switch {
	case commit == "":
		return fmt.Sprintf("gotorch-train %s (commit unknown)", version)
	case modified:
		return fmt.Sprintf("gotorch-train %s (commit %s, modified)", version, commit)
	}
	return fmt.Sprintf("gotorch-train %s (commit %s)", version, commit)
}

// versionInfo identifies the program and what it runs on: its version and
// commit, libtorch and the shim, the CUDA runtime and driver API (CUDA
// flavour), the NVIDIA driver (when NVML answers) and Go.
func versionInfo() monitor.VersionInfo {
	b := ct.Build()
	v := monitor.VersionInfo{Program: programVersion(), Go: runtime.Version(), Torch: b.TorchVersion,
		Flavour: b.Flavour(), ShimABI: b.ABIVersion}
	if b.CUDA {
		if rt, drv, err := ct.CUDAVersions(); err == nil {
			v.CUDA = "runtime " + ct.FormatCUDAVersion(rt) + ", driver API " + ct.FormatCUDAVersion(drv)
		}
	}
	if lib, err := monitor.OpenNVML(); err == nil {
		if lib.Available() {
			if d, err := lib.DriverVersion(); err == nil {
				v.Driver = d
			}
		}
		lib.Close()
	}
	return v
}

// versionLine is versionInfo on one line (--version, run headers, info).
func versionLine() string { return versionInfo().Line() }
