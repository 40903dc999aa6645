// Package monitor watches the memory of a gotorch-train run: host RSS and
// peak RSS, system and cgroup memory, live libtorch tensor handles, the CPU
// and CUDA allocators of cgotorch, and NVML device and per-process memory.
// It prints the user guide's per-step line, cleans up on a schedule, turns an
// out-of-memory error into a diagnosed report, predicts a configuration's
// peak before training, and raises an alarm when memory creeps upward.
//
// # Ownership
//
// A Monitor is created by the training loop with New, used from that one
// goroutine, and closed with Close (which writes the plot). It keeps no
// global state; its memory is bounded (fixed-size windows and a decimating
// plot buffer), so it cannot grow over a long run.
//
// # Units
//
// "MB" and "MiB" in printed lines both mean 2^20 bytes, printed with one
// decimal (memory.md, Conventions). In the Step line, CPU is the process's
// resident set size, GPU is the CUDA caching allocator's allocated bytes and
// GPU Cached its reserved bytes (memory.md U3, A1).
//
// # Files
//
// monitor.go (Options, Monitor, per-step calls, warnings), sample.go
// (Sample), host.go (RSS, VmHWM, host and cgroup memory), nvml.go (the NVML
// interface and its go-nvml implementation), log.go (Step line, JSONL
// series), plot.go (SVG), cleanup.go, summary.go, guard.go (Guard,
// OOMError, ReportOOM, Preflight on a Monitor), oom.go (report and U6
// summary), oomparse.go (libtorch messages), classify.go (causes),
// remedies.go (RunContext, ranked remedies), config.go (auto_config,
// PYTORCH_CUDA_ALLOC_CONF), preflight.go (peak prediction, microbatch
// choice), leak.go and theilsen.go (leak detection), units.go.
package monitor
