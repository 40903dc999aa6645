package monitor

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/scdiffusion/gotorch-train/cgotorch"
)

// Defaults of Options.
const (
	// DefaultLogInterval is the Step-line interval when Options.LogInterval
	// is zero (the guide's automatic mode logs every 1000 steps, A3).
	DefaultLogInterval = 1000
	// DefaultCleanupInterval is the CLI's --cleanup_interval default (U14);
	// Options.CleanupInterval has no implicit default (zero disables).
	DefaultCleanupInterval = 1000
	// maxSampleSpacing: samples are at most this many steps apart by
	// default (M3 samples every 100 steps).
	maxSampleSpacing = 100
)

// ErrOptions reports invalid Options.
var ErrOptions = errors.New("monitor: invalid options")

// Options configure a Monitor. The zero value is usable: Step lines every
// 1000 steps to stdout, samples every 100 steps, no periodic cleanup, no
// files, CUDA device 0 and NVML when CUDA is available.
type Options struct {
	// LogInterval is the number of steps between Step lines (U3, U22).
	// Zero means DefaultLogInterval; negative prints no Step lines (samples
	// are still taken for the series, plot and leak detection).
	LogInterval int
	// SampleInterval is the number of steps between samples (series, plot,
	// leak detection); LogInterval must be a multiple of it. Zero means
	// gcd(LogInterval, 100): every log step, and at least every 100 steps.
	SampleInterval int
	// CleanupInterval is the step interval of ShouldCleanup and OnStep's
	// cleanup (U14, U23; step 0 qualifies). Zero disables periodic cleanup,
	// matching --cleanup_interval 0; the CLI's default is
	// DefaultCleanupInterval.
	CleanupInterval int
	// Out receives every printed line; nil means os.Stdout.
	Out io.Writer
	// SeriesPath, if set, receives one JSON object per sample (JSON Lines).
	SeriesPath string
	// AppendSeries continues an existing series file (Files.Append).
	AppendSeries bool
	// PlotPath, if set, receives the memory-over-steps SVG at Close, if at
	// least one sample was taken.
	PlotPath string
	// ReportPath, if set, receives each out-of-memory report as JSON, at the
	// first free name of name.ext, name-2.ext, ... (Files.Report).
	ReportPath string
	// Device is the CUDA device ordinal watched (ignored without CUDA).
	// New initialises CUDA on it (cgotorch.CUDAInit), so run cgotorch.Init
	// (which exports PYTORCH_CUDA_ALLOC_CONF) first.
	Device int
	// DisableCUDA watches no CUDA device even when one is available (a run
	// on the CPU on a GPU machine): no CUDA initialisation, no GPU figures.
	DisableCUDA bool
	// NVML is the NVML source; nil means OpenNVML() when CUDA is
	// available. The Monitor closes an NVML it opened itself, not one
	// given here.
	NVML NVML
	// DisableNVML turns NVML off even when CUDA is available.
	DisableNVML bool
	// PCIBusID names the watched device for NVML; empty means
	// cgotorch.CUDAPCIBusID(Device) when CUDA is available. Setting it
	// (with NVML) lets a process without CUDA watch a device.
	PCIBusID string
	// LogFreeCache appends ", GPU Free Cache: X.XMB" (reserved − allocated)
	// to the Step line (A1's --log_free_cache).
	LogFreeCache bool
	// TerseCleanup prints only "Memory cleanup completed", without the
	// detail line.
	TerseCleanup bool
	// Leak configures leak detection (X3); its zero value is the default.
	Leak LeakConfig
	// HostWarnFraction warns when RSS exceeds this share of the cgroup limit
	// (else of host memory), or host available memory falls below
	// 1 − HostWarnFraction of the total. Zero means 0.9; negative disables.
	HostWarnFraction float64
	// Run describes the run's settings for OOM remedies; see SetRunContext.
	Run RunContext
	// Program names the trainer and its version in OOM reports
	// ("gotorch-train v0.4.0"); empty omits it.
	Program string
	// PlotMaxPoints bounds the points kept for the plot (older ones are
	// decimated by two whenever it fills); zero means 2000.
	PlotMaxPoints int
}

// Monitor watches memory during training. Create it with New, call
// LogMemoryUsage (or OnStep) after every optimiser step, and Close it at
// the end. A Monitor belongs to one goroutine; its memory is bounded.
type Monitor struct {
	opts        Options
	out         io.Writer
	logEvery    int // 0: no Step lines
	sampleEvery int
	sp          sampler
	ownNVML     bool
	nvmlErr     error
	series      *seriesWriter
	plot        plotBuffer
	leak        *LeakDetector
	build       cgotorch.BuildInfo
	driver      string

	lastStep    int
	last        Sample
	hasLast     bool
	samples     int
	peaks       peaks
	cleanups    cleanupStats
	ooms        int
	hostWarned  bool
	hostWarns   int
	tenants     []int // PIDs of other processes at the last sample
	tenantMoves int
	retries     retryWatch
	closed      bool
}

// New creates a Monitor. It opens NVML when CUDA is available (unless
// given or disabled; failure only leaves the NVML figures invalid) and
// starts the files Options names (see SetFiles).
func New(opts Options) (*Monitor, error) {
	m := &Monitor{opts: opts, out: opts.Out, build: cgotorch.Build()}
	if m.out == nil {
		m.out = os.Stdout
	}
	switch {
	case opts.LogInterval == 0:
		m.logEvery = DefaultLogInterval
	case opts.LogInterval > 0:
		m.logEvery = opts.LogInterval
	}
	switch {
	case opts.SampleInterval > 0:
		m.sampleEvery = opts.SampleInterval
	case opts.SampleInterval < 0:
		return nil, fmt.Errorf("%w: SampleInterval %d is negative", ErrOptions, opts.SampleInterval)
	case m.logEvery > 0:
		m.sampleEvery = gcd(m.logEvery, maxSampleSpacing)
	default:
		m.sampleEvery = maxSampleSpacing
	}
	if m.logEvery > 0 && m.logEvery%m.sampleEvery != 0 {
		return nil, fmt.Errorf("%w: LogInterval %d is not a multiple of SampleInterval %d", ErrOptions, m.logEvery, m.sampleEvery)
	}
	if opts.CleanupInterval < 0 {
		return nil, fmt.Errorf("%w: CleanupInterval %d is negative (0 disables)", ErrOptions, opts.CleanupInterval)
	}
	if opts.Device < 0 {
		return nil, fmt.Errorf("%w: Device %d is negative", ErrOptions, opts.Device)
	}
	m.sp = sampler{device: opts.Device, pid: os.Getpid(), now: time.Now}
	if !opts.DisableCUDA && cgotorch.CUDAIsAvailable() {
		if n := cgotorch.CUDADeviceCount(); opts.Device >= n {
			return nil, fmt.Errorf("%w: Device %d out of range (%d CUDA devices)", ErrOptions, opts.Device, n)
		}
		// The allocator's statistics exist only once CUDA is initialised.
		if err := cgotorch.CUDAInit(opts.Device); err != nil {
			return nil, fmt.Errorf("monitor: initialising cuda:%d: %w", opts.Device, err)
		}
		m.sp.cuda = true
	}
	m.sp.host = newHostReader()
	m.sp.busID = opts.PCIBusID
	if m.sp.busID == "" && m.sp.cuda {
		if id, err := cgotorch.CUDAPCIBusID(opts.Device); err == nil {
			m.sp.busID = id
		}
	}
	switch {
	case opts.DisableNVML:
	case opts.NVML != nil:
		m.sp.nvml = opts.NVML
	case m.sp.cuda:
		l, err := OpenNVML()
		m.nvmlErr = err
		if err == nil {
			m.sp.nvml, m.ownNVML = l, true
		}
	}
	if m.sp.nvml != nil && m.sp.nvml.Available() {
		if v, err := m.sp.nvml.DriverVersion(); err == nil {
			m.driver = v
		}
	}
	m.leak = NewLeakDetector(opts.Leak, m.sampleEvery)
	m.plot.max = opts.PlotMaxPoints
	if m.plot.max <= 0 {
		m.plot.max = 2000
	}
	if err := m.SetFiles(Files{Series: opts.SeriesPath, Plot: opts.PlotPath, Report: opts.ReportPath, Append: opts.AppendSeries}); err != nil {
		m.closeNVML()
		m.sp.host.close()
		return nil, err
	}
	return m, nil
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// LogInterval is the effective Step-line interval (0: no lines).
func (m *Monitor) LogInterval() int { return m.logEvery }

// SampleInterval is the effective sampling interval in steps.
func (m *Monitor) SampleInterval() int { return m.sampleEvery }

// CUDA reports whether the monitor reads CUDA allocator statistics.
func (m *Monitor) CUDA() bool { return m.sp.cuda }

// NVMLStatus is nil when NVML figures are being read, else why not.
func (m *Monitor) NVMLStatus() error {
	switch {
	case m.nvmlErr != nil:
		return m.nvmlErr
	case m.sp.nvml == nil || !m.sp.nvml.Available():
		return ErrNVMLUnavailable
	case m.sp.busID == "":
		return fmt.Errorf("%w: no PCI bus id for device %d", ErrNVMLUnavailable, m.opts.Device)
	}
	return nil
}

// SetRunContext updates the settings the OOM remedies refer to (e.g. after
// the microbatch changed).
func (m *Monitor) SetRunContext(rc RunContext) { m.opts.Run = rc }

// Sample reads every figure now, without printing or recording it.
func (m *Monitor) Sample(step int) Sample { return m.sp.sample(step, false) }

// LogMemoryUsage is the per-step call (U22): when step is due for a sample
// (a multiple of SampleInterval) it reads every figure, records it (series,
// plot, leak detection, peaks), prints the Step line if step is a multiple
// of LogInterval, prints any leak, host-memory or co-tenant warning, and
// returns the sample and true. Otherwise it returns at once after a single
// modulo test. Call it after the optimiser step, before any cleanup.
func (m *Monitor) LogMemoryUsage(step int) (Sample, bool) {
	if step%m.sampleEvery != 0 {
		return Sample{}, false
	}
	m.lastStep = step
	s := m.sp.sample(step, false)
	m.record(&s)
	if m.logEvery > 0 && step%m.logEvery == 0 {
		m.println(StepLine(&s, m.opts.LogFreeCache))
	}
	m.warnings(&s)
	return s, true
}

func (m *Monitor) record(s *Sample) {
	m.samples++
	m.last, m.hasLast = *s, true
	m.peaks.observe(s)
	m.series.write(s)
	m.plot.add(s)
}

func (m *Monitor) warnings(s *Sample) {
	for _, v := range m.leak.Observe(s) {
		m.println(v.Line(m.leak.cfg.Confidence))
	}
	if line, warn, clear := hostPressure(s, m.opts.HostWarnFraction); warn && !m.hostWarned {
		m.hostWarned = true
		m.hostWarns++
		m.println(line)
	} else if clear {
		m.hostWarned = false
	}
	if line := m.retries.observe(s, m.samples, m.allocAdvice); line != "" {
		m.println(line)
	}
	if s.NVMLValid {
		pids := make([]int, 0, len(s.OtherProcesses))
		for _, p := range s.OtherProcesses {
			pids = append(pids, p.PID)
		}
		slices.Sort(pids)
		if m.tenants != nil || m.samples > 1 {
			for _, line := range coTenantChanges(m.tenants, s.OtherProcesses, m.opts.Device) {
				m.tenantMoves++
				m.println(line)
			}
		}
		m.tenants = pids
	}
}

// hostPressure decides the host-memory warning: RSS above frac of the
// cgroup limit (else of host memory), or host available memory below
// 1 − frac of the total. clear reports that usage fell 5 points below the
// threshold again (re-arming the warning).
func hostPressure(s *Sample, frac float64) (line string, warn, clear bool) {
	if frac < 0 {
		return "", false, false
	}
	if frac == 0 {
		frac = 0.9
	}
	if s.RSSValid && s.CgroupLimited && s.CgroupLimitBytes > 0 {
		share := float64(s.RSSBytes) / float64(s.CgroupLimitBytes)
		if share >= frac {
			return fmt.Sprintf("⚠️ Host memory low: RSS %s is %.0f%% of the %s cgroup limit; the kernel OOM killer ends the run without a report",
				fmtSize(s.RSSBytes), share*100, fmtSize(s.CgroupLimitBytes)), true, false
		}
		return "", false, share < frac-0.05
	}
	if s.SysValid && s.SysTotalBytes > 0 {
		used := 1 - float64(s.SysAvailableBytes)/float64(s.SysTotalBytes)
		if used >= frac {
			rss := "unknown"
			if s.RSSValid {
				rss = fmtSize(s.RSSBytes)
			}
			return fmt.Sprintf("⚠️ Host memory low: %s of %s available (%.0f%% used), this process's RSS %s",
				fmtSize(s.SysAvailableBytes), fmtSize(s.SysTotalBytes), used*100, rss), true, false
		}
		return "", false, used < frac-0.05
	}
	return "", false, false
}

// coTenantChanges lists the processes that appeared on or left the device
// since the previous sample, one line each.
func coTenantChanges(prev []int, now []GPUProcess, dev int) []string {
	var lines []string
	seen := map[int]bool{}
	for _, p := range now {
		seen[p.PID] = true
		if !slices.Contains(prev, p.PID) {
			if p.UsedKnown {
				lines = append(lines, fmt.Sprintf("⚠️ GPU co-tenant appeared on cuda:%d: PID %d using %s", dev, p.PID, fmtSize(p.UsedBytes)))
			} else {
				lines = append(lines, fmt.Sprintf("⚠️ GPU co-tenant appeared on cuda:%d: PID %d", dev, p.PID))
			}
		}
	}
	for _, pid := range prev {
		if !seen[pid] {
			lines = append(lines, fmt.Sprintf("ℹ️ GPU co-tenant left cuda:%d: PID %d", dev, pid))
		}
	}
	return lines
}

// retryWatch notices rises of the allocator's num_alloc_retries (each one
// a failed cudaMalloc followed by a cache flush and a retry: expensive, and
// a sign of fragmentation or memory pressure, S1, X6). It warns at most
// once per 10 samples.
type retryWatch struct {
	known          bool
	prev           int64
	sinceStep      int
	lastWarnSample int
	rises, warns   int
}

func (w *retryWatch) observe(s *Sample, sample int, advice func() string) string {
	if !s.CUDAValid {
		return ""
	}
	defer func() { w.prev, w.known = s.CUDA.NumAllocRetries, true }()
	if !w.known || s.CUDA.NumAllocRetries <= w.prev {
		return ""
	}
	w.rises++
	if w.warns > 0 && sample-w.lastWarnSample < 10 {
		return ""
	}
	if w.warns == 0 {
		w.sinceStep = s.Step
	}
	w.warns++
	w.lastWarnSample = sample
	return fmt.Sprintf("⚠️ Allocator retries: num_alloc_retries rose from %d to %d (first rise at step %d): cudaMalloc failed and "+
		"the cache was flushed, a sign of fragmentation or memory pressure; consider %s", w.prev, s.CUDA.NumAllocRetries, w.sinceStep, advice())
}

// allocAdvice is the retry warning's suggestion for the running libtorch.
func (m *Monitor) allocAdvice() string {
	rc := m.opts.Run
	if rc.TorchVersion == "" {
		rc.TorchVersion = m.build.TorchVersion
	}
	if rc.AllocConf == "" {
		rc.AllocConf = EffectiveAllocConf()
	}
	smaller := "a smaller --microbatch"
	if !rc.has("--microbatch") {
		smaller = "a smaller --batch_size"
	}
	if r, ok := allocConfRemedy(rc); ok {
		return r.Action + " or " + smaller
	}
	return smaller
}

// ShouldCleanup reports whether step is a periodic cleanup step
// (step % CleanupInterval == 0, step 0 included; never when disabled).
func (m *Monitor) ShouldCleanup(step int) bool {
	return m.opts.CleanupInterval > 0 && step%m.opts.CleanupInterval == 0
}

// CleanupMemory runs the periodic cleanup (U14): a forced Go collection
// that returns freed heap to the OS, then the CUDA allocator's emptyCache
// when CUDA is in use. It prints "Memory cleanup completed" (U4) and,
// unless TerseCleanup, a detail line with the memory returned and the time
// split into Go GC and emptyCache, and returns the result (M5).
func (m *Monitor) CleanupMemory() CleanupResult {
	r := m.cleanup()
	m.cleanups.add(r)
	m.println(CleanupNotice)
	if !m.opts.TerseCleanup {
		m.println(r.DetailLine())
	}
	return r
}

// StepResult is what OnStep did.
type StepResult struct {
	// Sample and Sampled are LogMemoryUsage's results.
	Sample  Sample
	Sampled bool
	// Cleanup is non-nil when the step was a cleanup step.
	Cleanup *CleanupResult
}

// OnStep is LogMemoryUsage followed by CleanupMemory when ShouldCleanup,
// in the guide's order (the Step line first, U4).
func (m *Monitor) OnStep(step int) StepResult {
	var r StepResult
	r.Sample, r.Sampled = m.LogMemoryUsage(step)
	if m.ShouldCleanup(step) {
		m.lastStep = step
		c := m.CleanupMemory()
		r.Cleanup = &c
	}
	return r
}

// DeviceTotalBytes is the watched device's total memory for AutoConfig:
// NVML's total, else cudaMemGetInfo's; ok is false without a device.
func (m *Monitor) DeviceTotalBytes() (int64, bool) {
	var s Sample
	m.sp.sampleNVML(&s)
	if s.NVMLValid {
		return s.Device.TotalBytes, true
	}
	if m.sp.cuda {
		if _, total, err := cgotorch.CUDAMemGetInfo(m.sp.device); err == nil {
			return total, true
		}
	}
	return 0, false
}

func (m *Monitor) println(s string) { _, _ = io.WriteString(m.out, s+"\n") }

// Versions identifies the software (the OOM report's version line).
func (m *Monitor) Versions() VersionInfo { return m.versions() }

func (m *Monitor) versions() VersionInfo {
	v := VersionInfo{Program: m.opts.Program, Go: runtime.Version(), Torch: m.build.TorchVersion, Flavour: m.build.Flavour(),
		ShimABI: m.build.ABIVersion, Driver: m.driver, Device: m.opts.Device}
	if m.build.CUDA {
		if rt, drv, err := cgotorch.CUDAVersions(); err == nil {
			v.CUDA = "runtime " + cgotorch.FormatCUDAVersion(rt) + ", driver API " + cgotorch.FormatCUDAVersion(drv)
		}
	}
	if m.sp.cuda {
		v.DevicePCI = m.sp.busID
	}
	return v
}

// Close writes the plot (PlotPath, when this run took a sample), closes
// the series and the NVML library the Monitor opened, and returns the first
// error. It is idempotent; the Monitor must not be used afterwards.
func (m *Monitor) Close() error {
	if m.closed {
		return nil
	}
	m.closed = true
	var errs []error
	if m.opts.PlotPath != "" && m.samples > 0 {
		if err := m.WritePlot(m.opts.PlotPath); err != nil {
			errs = append(errs, fmt.Errorf("monitor: plot: %w", err))
		}
	}
	if err := m.series.close(); err != nil {
		errs = append(errs, fmt.Errorf("monitor: series: %w", err))
	}
	if err := m.closeNVML(); err != nil {
		errs = append(errs, err)
	}
	m.sp.host.close()
	return errors.Join(errs...)
}

func (m *Monitor) closeNVML() error {
	if m.ownNVML && m.sp.nvml != nil {
		m.ownNVML = false
		return m.sp.nvml.Close()
	}
	return nil
}
