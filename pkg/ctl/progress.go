package ctl

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/term"
)

// progressEvery is how often the progress line is redrawn: at most ten
// times a second, so that a fast copy spends nothing on its terminal.
const progressEvery = 100 * time.Millisecond

// progress draws one line on a terminal: bytes moved, of how many when
// known, and the rate. A nil *progress draws nothing, so that callers need
// not ask whether stderr is a terminal.
type progress struct {
	w     io.Writer
	label string
	total int64
	start time.Time
	n     atomic.Int64
	stop  chan struct{}
	// stopped is closed once the drawing goroutine has drawn its last.
	stopped chan struct{}
	once    sync.Once
}

// newProgress returns a progress line on the client's stderr when that is
// a terminal, else nil. total 0 means unknown.
func (c *Client) newProgress(label string, total int64) *progress {
	f, ok := c.err.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return startProgress(c.err, label, total)
}

func startProgress(w io.Writer, label string, total int64) *progress {
	p := &progress{w: w, label: label, total: total, start: time.Now(), stop: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(p.stopped)
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.draw("")
			case <-p.stop:
				p.draw("\n")
				return
			}
		}
	}()
	return p
}

func (p *progress) add(n int64) {
	if p != nil {
		p.n.Add(n)
	}
}

// done draws the final line and stops the drawing.
func (p *progress) done() {
	if p == nil {
		return
	}
	p.once.Do(func() { close(p.stop) })
	<-p.stopped
}

func (p *progress) draw(end string) {
	n := p.n.Load()
	elapsed := time.Since(p.start).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(n) / elapsed
	}
	of := ""
	if p.total > 0 {
		of = fmt.Sprintf(" of %s (%d%%)", size(p.total), n*100/p.total)
	}
	label := ""
	if p.label != "" {
		label = p.label + "  "
	}
	fmt.Fprintf(p.w, "\r\033[K%s%s%s  %s/s%s", label, size(n), of, size(int64(rate)), end)
}

// size renders n bytes for people.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for v >= unit && i < 3 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGT"[i])
}

type countingReader struct {
	r io.Reader
	p *progress
}

func (c countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.add(int64(n))
	return n, err
}

type countingWriter struct {
	w io.Writer
	p *progress
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.p.add(int64(n))
	return n, err
}

// reader counts what is read from r.
func (p *progress) reader(r io.Reader) io.Reader {
	if p == nil {
		return r
	}
	return countingReader{r, p}
}

// writer counts what is written to w.
func (p *progress) writer(w io.Writer) io.Writer {
	if p == nil {
		return w
	}
	return countingWriter{w, p}
}
