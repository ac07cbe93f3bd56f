package logfile

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// MaxLineSize is the longest text one record holds: the log driver splits
// a longer line, or one a sandbox never ends, into records of this size
// marked partial (P), the last one full (F). 16 KiB is what Docker and
// containerd's CRI split at, so the driver never holds more than this of a
// line in memory.
const MaxLineSize = 16 * 1024

// Writer appends records to a log file and rotates it by size. It is safe
// for concurrent use: stdout and stderr copy into one Writer.
type Writer struct {
	path     string
	maxSize  int64
	maxFiles int
	now      func() time.Time

	mu   sync.Mutex
	f    *os.File
	size int64
	buf  []byte

	// A pending Writer (Pending) holds what is written until Switch names
	// its file: held, heldBytes of text in all; full is signalled (under
	// mu) when the switch or Close ends a wait for room; closed drops
	// whatever comes after Close.
	held      []Line
	heldBytes int
	full      *sync.Cond
	closed    bool
	giveUp    *time.Timer
}

// MaxHeld is how much text a pending Writer holds before its Write waits
// for the switch: what a sandbox writes between the start of its main
// process and the switch of its log, which a claim runs side by side. A
// waiting Write stops the driver reading the sandbox's output, so the
// sandbox waits too, and nothing is lost.
const MaxHeld = 256 << 10

// HeldWait is how long a Write waits for room in a full pending Writer
// before the Writer drops what it holds and whatever comes: a claim
// switches within milliseconds, so a switch this late is not coming.
const HeldWait = 30 * time.Second

// Option configures a Writer.
type Option func(*Writer)

// WithRotation rotates the file once it would grow past maxSize bytes,
// keeping at most maxFiles files in all (the live one included). A maxSize
// of 0 never rotates.
func WithRotation(maxSize int64, maxFiles int) Option {
	return func(w *Writer) {
		w.maxSize = maxSize
		w.maxFiles = max(maxFiles, 1)
	}
}

// Create opens path for appending, making its directory when missing.
func Create(path string, opts ...Option) (*Writer, error) {
	w := &Writer{path: path, maxFiles: 1, now: time.Now}
	for _, o := range opts {
		o(w)
	}
	// The agent removes empty log directories of deleted sandboxes; one
	// may go between MkdirAll and the open, so a vanished directory is made
	// again a few times before giving up.
	var err error
	for range 3 {
		if err = os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return nil, fmt.Errorf("create log dir: %w", err)
		}
		if err = w.open(); err == nil {
			return w, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	return nil, err
}

func (w *Writer) open() error {
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat log file: %w", err)
	}
	w.f, w.size = f, fi.Size()
	return nil
}

// Write appends text as one record, or, when it is longer than
// MaxLineSize, as several: every piece but the last is partial, and the last
// is partial when partial is set. Each record reaches the file in one
// write, so a reader sees it as soon as Write returns.
func (w *Writer) Write(stream string, partial bool, text []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		piece, more := text, false
		if len(text) > MaxLineSize {
			piece, text, more = text[:MaxLineSize], text[MaxLineSize:], true
		}
		if err := w.write(Line{Time: w.now(), Stream: stream, Partial: partial || more, Text: piece}); err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
}

func (w *Writer) write(l Line) error {
	for w.f == nil {
		// A pending Writer (a warm sandbox's): held for the file Switch
		// names, or dropped after Close.
		switch {
		case w.closed:
			return nil
		case w.heldBytes+len(l.Text) <= MaxHeld || len(w.held) == 0:
			l.Text = append([]byte(nil), l.Text...)
			w.held = append(w.held, l)
			w.heldBytes += len(l.Text)
			return nil
		}
		if w.giveUp == nil {
			// A switch that never comes (a claim undone) must not hold the
			// driver forever: after HeldWait what is held goes.
			w.giveUp = time.AfterFunc(HeldWait, func() {
				w.mu.Lock()
				defer w.mu.Unlock()
				if w.f == nil {
					w.closed, w.held, w.heldBytes = true, nil, 0
					w.full.Broadcast()
				}
			})
		}
		w.full.Wait()
	}
	w.buf = appendRecord(w.buf[:0], l)
	if w.maxSize > 0 && w.size > 0 && w.size+int64(len(w.buf)) > w.maxSize {
		if err := w.rotate(); err != nil {
			return err
		}
	}
	n, err := w.f.Write(w.buf)
	w.size += int64(n)
	if err != nil {
		return fmt.Errorf("write log file: %w", err)
	}
	return nil
}

// rotate shifts path.N-1 to path.N and so on, path to path.1, and opens a
// new path. The oldest file beyond maxFiles is removed.
func (w *Writer) rotate() error {
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("close log file: %w", err)
	}
	if w.maxFiles == 1 {
		if err := os.Remove(w.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotate log file: %w", err)
		}
		return w.open()
	}
	for i := w.maxFiles - 1; i >= 1; i-- {
		from := w.path
		if i > 1 {
			from = fmt.Sprintf("%s.%d", w.path, i-1)
		}
		err := os.Rename(from, fmt.Sprintf("%s.%d", w.path, i))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotate log file: %w", err)
		}
	}
	return w.open()
}

// Close closes the file. A pending Writer drops what it holds and what
// comes after.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		w.closed, w.held, w.heldBytes = true, nil, 0
		w.full.Broadcast()
		return nil
	}
	return w.f.Close()
}

// Pending returns a Writer without a file yet: a warm sandbox's, whose
// output belongs to no sandbox until it is claimed. It holds what is
// written (MaxHeld at most; a Write then waits) until Switch names the
// file, which gets it first. A warm sandbox writes nothing before its
// claim starts the main process, so what it holds is the main process's
// first output, written while the claim switches the log.
func Pending() *Writer {
	w := &Writer{maxFiles: 1, now: time.Now}
	w.full = sync.NewCond(&w.mu)
	return w
}

// Switch makes a pending Writer write to path from now on, as Create
// would, with opts, starting with what it holds. Switching again to the same path does nothing, so that
// a switch retried (the agent restarted mid-claim) is harmless; a switch
// to another path once one is set is refused.
func (w *Writer) Switch(path string, opts ...Option) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f != nil {
		if w.path == path {
			return nil
		}
		return fmt.Errorf("log already written to %s, not switched to %s", w.path, path)
	}
	if path == "" {
		return errors.New("switch log: no path")
	}
	if w.closed {
		return errors.New("switch log: the log is closed")
	}
	nw, err := Create(path, opts...)
	if err != nil {
		return err
	}
	w.path, w.maxSize, w.maxFiles, w.f, w.size = nw.path, nw.maxSize, nw.maxFiles, nw.f, nw.size
	held := w.held
	w.held, w.heldBytes = nil, 0
	if w.full != nil {
		w.full.Broadcast()
	}
	if w.giveUp != nil {
		w.giveUp.Stop()
	}
	for _, l := range held {
		if err := w.write(l); err != nil {
			return err
		}
	}
	return nil
}

// Copy writes every line read from r as records of stream until r ends.
// Lines longer than MaxLineSize become partial records; a last line without
// a newline is written as a full record.
func (w *Writer) Copy(stream string, r io.Reader) error {
	br := bufio.NewReaderSize(r, MaxLineSize)
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			if werr := w.Write(stream, false, line[:len(line)-1]); werr != nil {
				return werr
			}
		case errors.Is(err, bufio.ErrBufferFull):
			if werr := w.Write(stream, true, line); werr != nil {
				return werr
			}
		case errors.Is(err, io.EOF) || errors.Is(err, os.ErrClosed):
			if len(line) > 0 {
				return w.Write(stream, false, line)
			}
			return nil
		default:
			if len(line) > 0 {
				_ = w.Write(stream, false, line)
			}
			return fmt.Errorf("read %s: %w", stream, err)
		}
	}
}
