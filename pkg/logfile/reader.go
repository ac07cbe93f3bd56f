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
	"unicode/utf8"
)

// PollInterval is how often a follower looks for new records.
const PollInterval = 50 * time.Millisecond

// A reader trusts nothing in a log file: the log driver writes it, but the
// driver writes what a sandbox feeds it. These bound what one reader holds.
const (
	// MaxRecordSize is the longest record a reader accepts, newline
	// excluded: the log driver never writes a longer one. A longer record is
	// skipped without being held in memory.
	MaxRecordSize = maxHeaderLen + MaxLineSize
	// MaxJoinedLine is the longest line a reader makes by joining partial
	// records. A longer line is sent in pieces of at most this size, each
	// but the last marked Partial.
	MaxJoinedLine = 256 << 10
	// DefaultBatchBytes is the most a batch passed to Stream's send holds
	// when StreamOptions.MaxBatchBytes is not set, counted as LineOverhead
	// plus the text of each line.
	DefaultBatchBytes = 1 << 20
	// LineOverhead is what a line costs in a batch besides its text: room
	// for its time, stream and the framing of a protobuf message.
	LineOverhead = 64

	// readChunk is the unit of reads, forwards and backwards; it holds more
	// than one record of MaxRecordSize.
	readChunk = 64 << 10
	// tailReach is how far, in bytes of records, tail looks back past its
	// first full record for the rest of its lines (their partial records,
	// back to their stream's previous full record). It has room for a whole
	// joined line and as much of the other stream between its pieces; a
	// line whose pieces lie further back starts mid-way. Without a bound, a
	// line alone on its stream would have tail read the whole log.
	tailReach = 2 * MaxJoinedLine
	// lineBytes is the most a line of MaxJoinedLine bytes of text takes in
	// a file: its text and the header and newline of each of its records.
	// Tail N looks back at most N of these and tailReach for the last N
	// full records: records of a line never ended (no full record at all,
	// when a sandbox writes without newlines) must not send it back through
	// the whole log.
	lineBytes = MaxJoinedLine + (MaxJoinedLine/MaxLineSize+1)*(maxHeaderLen+1)
)

// StreamOptions say what Stream sends.
type StreamOptions struct {
	// Tail sends only the last Tail lines written so far; 0 sends them all.
	// The files are read backwards from their end until Tail lines are
	// found, and at most a few hundred KiB further for the pieces of the
	// first line of each stream, so the cost does not grow with the size of
	// the log. Such a first line may start mid-way: when it is longer than
	// MaxJoinedLine, or when its pieces lie further back than that. The
	// look back for the lines themselves is bounded too, by what Tail lines
	// of MaxJoinedLine take and a few hundred KiB: what lies beyond it is
	// not sent, and a line never ended (no newline written) may arrive as a
	// few lines of MaxJoinedLine instead.
	Tail int
	// Follow keeps sending new lines until Done reports true and the file is
	// drained, or the context ends.
	Follow bool
	// Done reports whether the writer has finished for good (the sandbox has
	// exited). Nil means never.
	Done func() bool
	// MaxBatchBytes bounds a batch (LineOverhead plus the text of each line;
	// a batch holds at least one line); 0 means DefaultBatchBytes.
	MaxBatchBytes int
}

// Stream reads the log at path, rotated files first, and passes its lines to
// send in batches. Partial records are joined into whole lines of at most
// MaxJoinedLine bytes. Memory use is bounded by the batch size and
// MaxJoinedLine, whatever the size of the files or of their records.
func Stream(ctx context.Context, path string, opts StreamOptions, send func([]Line) error) error {
	maxBatch := opts.MaxBatchBytes
	if maxBatch <= 0 {
		maxBatch = DefaultBatchBytes
	}
	b := &batcher{max: maxBatch, send: send}
	files, err := openLog(path)
	defer func() {
		for _, lf := range files {
			if lf.f != nil {
				lf.f.Close()
			}
		}
	}()
	if err != nil {
		return err
	}
	first, off, skip := 0, int64(0), 0
	if opts.Tail > 0 {
		if first, off, skip, err = tailStart(files, opts.Tail); err != nil {
			return err
		}
	}
	j := &joiner{skip: skip}
	// The live file is read through its handle so that following continues
	// exactly where the first read ended.
	var f *os.File
	var rr *recordReader
	for i := first; i < len(files); i++ {
		lf := &files[i]
		if i == first && off > 0 {
			if _, err := lf.f.Seek(off, io.SeekStart); err != nil {
				return fmt.Errorf("seek log: %w", err)
			}
		}
		r := newRecordReader(lf.f)
		if err := r.drain(j, b.add); err != nil {
			return err
		}
		if lf.live {
			f, rr, lf.f = lf.f, r, nil // closed below, not by the deferred loop
		}
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	if err := b.flush(); err != nil {
		return err
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
		rotatedAway := false
		if f == nil {
			if f, err = os.Open(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("open log: %w", err)
			}
			if f != nil {
				rr = newRecordReader(f)
			}
		}
		if f != nil {
			if err := rr.drain(j, b.add); err != nil {
				return err
			}
			if replaced(f, path) {
				// Rotated: what was left in the old file has been read
				// above; the new file is read on the next round.
				f.Close()
				f, rr, rotatedAway = nil, nil, true
			}
		}
		if err := b.flush(); err != nil {
			return err
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

// logFile is one file of a log, opened when Stream starts so that a
// rotation while it reads does not make it read a file twice.
type logFile struct {
	f    *os.File
	size int64
	live bool
}

// openLog opens path's rotated files, oldest first, and then path itself,
// the live one, which may be missing.
func openLog(path string) ([]logFile, error) {
	var files []logFile
	for _, p := range append(rotated(path), path) {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue // rotated away while we listed, or not written yet
		}
		if err != nil {
			return files, fmt.Errorf("open log: %w", err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return files, fmt.Errorf("stat log: %w", err)
		}
		files = append(files, logFile{f: f, size: fi.Size(), live: p == path})
	}
	return files, nil
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

// tailStart finds where the last n lines of files begin, reading the files
// backwards from the sizes they had when opened: the file index and offset
// to read forwards from, and how many full records there belong to earlier
// lines and are to be skipped.
//
// A line is one full record (F) and the partial records (P) of the same
// stream before it; records of the two streams interleave. So the start is
// the end of a full record that closes every stream taken: once n full
// records are counted, scanning goes on until each stream seen among them
// has met its previous full record (or the beginning of the log), or until
// it has gone tailReach bytes further back, where it starts, cutting the
// line of a stream still open. The full records passed on the way belong
// to earlier lines: they are the skip. Only counters are kept, never
// records. Before n full records are found, scanning stops after n times
// lineBytes and tailReach, where it starts with nothing to skip.
func tailStart(files []logFile, n int) (idx int, off int64, skip int, err error) {
	full := 0
	// left is how many more bytes of records the scan may pass: first for
	// the n full records, then, from the n-th on, for the streams to close.
	left := int64(n)*int64(lineBytes) + tailReach
	open := map[string]bool{}
	for i := len(files) - 1; i >= 0; i-- {
		var stop bool
		err := scanBack(files[i].f, files[i].size, func(end int64, head []byte, size int64) bool {
			// A record longer than the driver writes (the file is not
			// the driver's alone) counts as the longest it writes: such
			// records are skipped, and lines beyond them still sent.
			if left -= min(size, int64(MaxRecordSize)) + 1; left < 0 {
				stop, off = true, end+1
				return false
			}
			if size > int64(MaxRecordSize) {
				return true // skipped by the forward reader too
			}
			l, _, err := parseHeader(head)
			if err != nil || l.Partial {
				return true
			}
			if full < n {
				full++
				open[l.Stream] = true
				if full == n {
					left = tailReach
				}
				return true
			}
			open[l.Stream] = false
			if !open[Stdout] && !open[Stderr] {
				stop, off = true, end+1
				return false
			}
			skip++
			return true
		})
		if err != nil {
			return 0, 0, 0, fmt.Errorf("read log backwards: %w", err)
		}
		if stop {
			return i, off, skip, nil
		}
	}
	return 0, 0, skip, nil
}

// scanBack calls visit for each newline-terminated record of the first size
// bytes of f, the last first, with the offset of its newline, its first
// bytes (up to maxHeaderLen) and its length, until visit returns false.
// Bytes after the last newline (a record being written) are left out.
func scanBack(f *os.File, size int64, visit func(end int64, head []byte, size int64) bool) error {
	buf := make([]byte, readChunk)
	head := make([]byte, maxHeaderLen)
	end := int64(-1) // the newline ending the record being looked at
	// record passes the record from start to end to visit; its head is in
	// the chunk at pos when it lies there, else read on its own.
	record := func(start int64, chunk []byte, pos int64) (bool, error) {
		h := head[:min(int64(maxHeaderLen), end-start)]
		if rel := start - pos; rel >= 0 && rel+int64(len(h)) <= int64(len(chunk)) {
			copy(h, chunk[rel:])
		} else if _, err := f.ReadAt(h, start); err != nil {
			return false, err
		}
		return visit(end, h, end-start), nil
	}
	pos := size
	var chunk []byte
	for pos > 0 {
		n := min(int64(len(buf)), pos)
		pos -= n
		chunk = buf[:n]
		if _, err := f.ReadAt(chunk, pos); err != nil {
			return err
		}
		for i := len(chunk); ; {
			i = bytes.LastIndexByte(chunk[:i], '\n')
			if i < 0 {
				break
			}
			if end >= 0 {
				more, err := record(pos+int64(i)+1, chunk, pos)
				if err != nil || !more {
					return err
				}
			}
			end = pos + int64(i)
		}
	}
	if end >= 0 {
		_, err := record(0, chunk, 0)
		return err
	}
	return nil
}

// recordReader reads newline-terminated records with a fixed buffer. A
// record not complete yet stays buffered for the next read (a follower
// reads a growing file); one longer than MaxRecordSize is skipped.
type recordReader struct {
	r          io.Reader
	buf        []byte
	start, end int
	// skipping is set while the rest of an over-long record is dropped.
	skipping bool
}

func newRecordReader(r io.Reader) *recordReader {
	return &recordReader{r: r, buf: make([]byte, readChunk)}
}

// next returns the next complete record without its newline, valid until
// the next call, or ok false when r has no complete record now.
func (rr *recordReader) next() (rec []byte, ok bool, err error) {
	for {
		if i := bytes.IndexByte(rr.buf[rr.start:rr.end], '\n'); i >= 0 {
			rec = rr.buf[rr.start : rr.start+i]
			rr.start += i + 1
			if rr.skipping || len(rec) > MaxRecordSize {
				rr.skipping = false
				continue
			}
			return rec, true, nil
		}
		switch {
		case rr.skipping || rr.end-rr.start > MaxRecordSize:
			rr.skipping, rr.start, rr.end = true, 0, 0
		case rr.start > 0:
			rr.end = copy(rr.buf, rr.buf[rr.start:rr.end])
			rr.start = 0
		}
		n, err := rr.r.Read(rr.buf[rr.end:])
		rr.end += n
		if n == 0 {
			if err == nil || errors.Is(err, io.EOF) {
				return nil, false, nil
			}
			return nil, false, fmt.Errorf("read log: %w", err)
		}
	}
}

// drain passes every complete record rr has now through j to emit.
// Malformed records are skipped.
func (rr *recordReader) drain(j *joiner, emit func(Line) error) error {
	for {
		rec, ok, err := rr.next()
		if err != nil || !ok {
			return err
		}
		l, err := ParseLine(rec)
		if err != nil {
			continue
		}
		if err := j.add(l, emit); err != nil {
			return err
		}
	}
}

// joiner turns records into lines, joining partial records per stream up
// to MaxJoinedLine. Emitted lines own their text.
type joiner struct {
	partial map[string][]byte
	// skip is how many full records (and the lines they end) to drop
	// before lines are emitted: the lines before a tail.
	skip int
}

func (j *joiner) add(l Line, emit func(Line) error) error {
	p := j.partial[l.Stream]
	if len(p) > 0 && len(p)+len(l.Text) > MaxJoinedLine {
		// Too long to join: what is held goes out as a piece of its own,
		// marked partial, as the line goes on. It ends on a character's
		// boundary: the bytes of a character cut in two go on with the
		// next piece, which keeps the text valid UTF-8 on both sides.
		delete(j.partial, l.Stream)
		cut := runeCut(p)
		if j.skip == 0 {
			if err := emit(Line{Time: l.Time, Stream: l.Stream, Text: p[:cut], Partial: true}); err != nil {
				return err
			}
		}
		p = slices.Clone(p[cut:])
	}
	if l.Partial {
		if j.partial == nil {
			j.partial = make(map[string][]byte)
		}
		j.partial[l.Stream] = append(p, l.Text...)
		return nil
	}
	delete(j.partial, l.Stream)
	if j.skip > 0 {
		j.skip--
		return nil
	}
	if len(p) > 0 {
		l.Text = append(p, l.Text...)
	} else {
		l.Text = slices.Clone(l.Text)
	}
	return emit(l)
}

// batcher gathers lines into batches of at most max bytes (a batch holds at
// least one line) and passes each full one to send.
type batcher struct {
	max   int
	size  int
	lines []Line
	send  func([]Line) error
}

func (b *batcher) add(l Line) error {
	cost := len(l.Text) + LineOverhead
	if len(b.lines) > 0 && b.size+cost > b.max {
		if err := b.flush(); err != nil {
			return err
		}
	}
	b.lines = append(b.lines, l)
	b.size += cost
	return nil
}

// flush sends the lines gathered, if any. send may keep the slice.
func (b *batcher) flush() error {
	if len(b.lines) == 0 {
		return nil
	}
	lines := b.lines
	b.lines, b.size = nil, 0
	return b.send(lines)
}

// runeCut returns where b may be cut so that no UTF-8 character ends cut
// in two: len(b), or the start of an unfinished character in its last
// bytes.
func runeCut(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return i
			}
			break
		}
	}
	return len(b)
}
