package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// progress draws a one-line progress bar on a terminal between the
// program's regular output lines: every write first clears the bar, and the
// bar is redrawn at most twice a second. On anything but a terminal it is
// inert and the periodic log lines are the only progress output.
type progress struct {
	mu      sync.Mutex
	w       io.Writer
	tty     bool
	label   string
	total   int
	start   time.Time
	first   int
	last    time.Time
	drawn   bool
	lastBar string
}

func newProgress(w io.Writer, label string, total int) *progress {
	return &progress{w: w, tty: isTerminal(w), label: label, total: total, start: time.Now(), first: -1}
}

// Write passes output through, clearing the bar first.
func (p *progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
	return p.w.Write(b)
}

func (p *progress) clear() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		p.drawn = false
	}
}

// step records that step (0-based) finished and redraws the bar if due.
func (p *progress) step(step int) {
	if !p.tty {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if p.first < 0 {
		p.first, p.start = step, now
	}
	if now.Sub(p.last) < 500*time.Millisecond && step+1 != p.total {
		return
	}
	p.last = now
	done := step + 1
	rate := 0.0 // steps per second since the first step seen
	if el := now.Sub(p.start).Seconds(); el > 0 && step > p.first {
		rate = float64(step-p.first) / el
	}
	bar := p.label + fmt.Sprintf(" step %d", done)
	if p.total > 0 {
		frac := float64(done) / float64(p.total)
		const width = 30
		n := min(width, int(frac*width))
		bar += fmt.Sprintf("/%d [%s%s] %3.0f%%", p.total, strings.Repeat("#", n), strings.Repeat(" ", width-n), 100*frac)
		if rate > 0 {
			eta := time.Duration(float64(p.total-done) / rate * float64(time.Second)).Round(time.Second)
			bar += fmt.Sprintf(" %.1f steps/s, %v left", rate, eta)
		}
	} else if rate > 0 {
		bar += fmt.Sprintf(" %.1f steps/s", rate)
	}
	p.clear()
	fmt.Fprint(p.w, bar)
	p.drawn, p.lastBar = true, bar
}

// done removes the bar.
func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
}

// setTotal sets the number of steps once it is known (0: unknown).
func (p *progress) setTotal(total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total = total
}
