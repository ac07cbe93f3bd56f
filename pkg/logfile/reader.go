package logfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// PollInterval is how often a follower looks for new records.
const PollInterval = 50 * time.Millisecond

// StreamOptions say what Stream sends.
type StreamOptions struct {
	// Tail sends only the last Tail lines written so far; 0 sends them all.
	Tail int
	// Follow keeps sending new lines until Done reports true and the file is
	// drained, or the context ends.
	Follow bool
	// Done reports whether the writer has finished for good (the sandbox has
	// exited). Nil means never.
	Done func() bool
}

// Stream reads the log at path, rotated files first, and passes its lines to
// send in batches. Partial records are joined into whole lines.
func Stream(ctx context.Context, path string, opts StreamOptions, send func([]Line) error) error {
	var lines []Line
	var j joiner
	for _, p := range rotated(path) {
		data, err := os.ReadFile(p)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // rotated away while we listed
			}
			return fmt.Errorf("read log: %w", err)
		}
		lines, _ = j.parse(lines, data)
	}
	// The live file is read through a handle so that following continues
	// exactly where the first read ended.
	f, err := os.Open(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("open log: %w", err)
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	var rest []byte
	if f != nil {
		data, err := io.ReadAll(f)
		if err != nil {
			return fmt.Errorf("read log: %w", err)
		}
		lines, rest = j.parse(lines, data)
	}
	if opts.Tail > 0 && len(lines) > opts.Tail {
		lines = lines[len(lines)-opts.Tail:]
	}
	if len(lines) > 0 {
		if err := send(lines); err != nil {
			return err
		}
	}
	if !opts.Follow {
		return nil
	}

	tick := time.NewTicker(PollInterval)
	defer tick.Stop()
	for {
		// Look at Done before reading, so that what the writer wrote before
		// it finished is read before we stop.
		finished := opts.Done != nil && opts.Done()
		var batch []Line
		rotatedAway := false
		if f == nil {
			if f, err = os.Open(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("open log: %w", err)
			}
		}
		if f != nil {
			data, err := io.ReadAll(f)
			if err != nil {
				return fmt.Errorf("read log: %w", err)
			}
			batch, rest = j.parse(batch, append(rest, data...))
			if replaced(f, path) {
				// Rotated: what was left in the old file has been read
				// above; the new file is read on the next round.
				f.Close()
				f, rest, rotatedAway = nil, nil, true
			}
		}
		if len(batch) > 0 {
			if err := send(batch); err != nil {
				return err
			}
		}
		if rotatedAway {
			continue
		}
		if finished {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// rotated lists path's rotated files, oldest first.
func rotated(path string) []string {
	matches, _ := filepath.Glob(path + ".*")
	type file struct {
		n    int
		path string
	}
	var files []file
	for _, m := range matches {
		n, err := strconv.Atoi(strings.TrimPrefix(m, path+"."))
		if err == nil && n > 0 {
			files = append(files, file{n, m})
		}
	}
	slices.SortFunc(files, func(a, b file) int { return b.n - a.n })
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.path
	}
	return out
}

// replaced reports whether path now names another file than f.
func replaced(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return true
	}
	b, err := os.Stat(path)
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	return !os.SameFile(a, b)
}

// joiner turns records into lines, joining partial records per stream.
type joiner struct {
	partial map[string][]byte
}

// parse appends the lines in data to lines and returns the bytes after the
// last complete record. Malformed records are skipped.
func (j *joiner) parse(lines []Line, data []byte) ([]Line, []byte) {
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return lines, slices.Clone(data)
		}
		l, err := ParseLine(data[:i])
		data = data[i+1:]
		if err != nil {
			continue
		}
		if l.Partial {
			if j.partial == nil {
				j.partial = make(map[string][]byte)
			}
			j.partial[l.Stream] = append(j.partial[l.Stream], l.Text...)
			continue
		}
		if p := j.partial[l.Stream]; len(p) > 0 {
			l.Text = append(p, l.Text...)
			delete(j.partial, l.Stream)
		} else {
			l.Text = slices.Clone(l.Text)
		}
		lines = append(lines, l)
	}
}
