package monitor

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Files are a Monitor's outputs on disk; an empty path disables that output.
type Files struct {
	// Series receives one JSON object per sample (JSON Lines).
	Series string
	// Plot receives the memory-over-steps SVG at Close, if this run took
	// at least one sample (an earlier run's plot is never replaced by an
	// empty one).
	Plot string
	// Report receives each out-of-memory report as JSON, at the first free
	// name of report.json, report-2.json, ... (an earlier run's reports are
	// never overwritten).
	Report string
	// Append continues an existing series (a resumed run): samples are
	// appended to it, and the plot starts from the samples already there.
	// Without Append an existing series is replaced.
	Append bool
}

// SetFiles starts the outputs f describes; parent directories are created.
// A caller that must not touch the disk before its configuration is known
// to be valid creates the Monitor without files and calls SetFiles then.
// It may be called once, before the first sample; Options.SeriesPath,
// PlotPath, ReportPath and AppendSeries are the same, set at New.
func (m *Monitor) SetFiles(f Files) error {
	if m.series != nil || m.samples > 0 {
		return fmt.Errorf("%w: SetFiles after the series was started or a sample was taken", ErrOptions)
	}
	for _, p := range []string{f.Series, f.Plot, f.Report} {
		if p != "" {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
		}
	}
	if f.Series != "" {
		sw, prior, err := openSeries(f.Series, f.Append)
		if err != nil {
			return fmt.Errorf("monitor: series: %w", err)
		}
		m.series = sw
		for i := range prior {
			m.plot.addPoint(prior[i])
		}
	}
	m.opts.SeriesPath, m.opts.PlotPath, m.opts.ReportPath, m.opts.AppendSeries = f.Series, f.Plot, f.Report, f.Append
	return nil
}

// openSeries opens the series file: created or truncated, or with
// appendTo opened for appending after reading the plot points of the
// samples already in it (lines that do not parse, e.g. one cut short by a
// crash, are skipped; a missing final newline is added first).
func openSeries(path string, appendTo bool) (*seriesWriter, []plotPoint, error) {
	if !appendTo {
		f, err := os.Create(path)
		if err != nil {
			return nil, nil, err
		}
		return &seriesWriter{f: f, w: bufio.NewWriterSize(f, 4096)}, nil, nil
	}
	var prior []plotPoint
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, err
	}
	for _, line := range bytes.Split(old, []byte("\n")) {
		var r sampleRecord
		if len(bytes.TrimSpace(line)) == 0 || json.Unmarshal(line, &r) != nil {
			continue
		}
		prior = append(prior, r.plotPoint())
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	if len(old) > 0 && old[len(old)-1] != '\n' {
		if _, err := io.WriteString(f, "\n"); err != nil {
			f.Close()
			return nil, nil, err
		}
	}
	return &seriesWriter{f: f, w: bufio.NewWriterSize(f, 4096)}, prior, nil
}

// plotPoint is the plot's view of a series record.
func (r *sampleRecord) plotPoint() plotPoint {
	s := Sample{Step: r.Step, LiveTensors: r.LiveTensors}
	get := func(p *int64) (int64, bool) {
		if p == nil {
			return 0, false
		}
		return *p, true
	}
	s.RSSBytes, s.RSSValid = get(r.RSSBytes)
	s.PeakRSSBytes, s.PeakRSSValid = get(r.PeakRSSBytes)
	s.CPUTensorBytes, s.CPUAllocValid = get(r.CPUTensorBytes)
	s.CUDA.AllocatedBytes, s.CUDAValid = get(r.GPUAllocatedBytes)
	s.CUDA.ReservedBytes, _ = get(r.GPUReservedBytes)
	s.CUDA.PeakAllocatedBytes, _ = get(r.GPUAllocatedPeakBytes)
	s.CUDA.PeakReservedBytes, _ = get(r.GPUReservedPeakBytes)
	s.ProcessGPUBytes, s.ProcessGPUValid = get(r.ProcessGPUBytes)
	return newPlotPoint(&s)
}

// freeReportPath is the first of path, name-2.ext, name-3.ext, ... that
// does not exist, starting at the n-th (n ≥ 1).
func freeReportPath(path string, n int) string {
	for ; ; n++ {
		p := numberedPath(path, n)
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			return p
		}
	}
}
