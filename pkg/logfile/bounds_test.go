package logfile

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// writeRecords writes n records of about size bytes straight into path, in
// the driver's format, faster than a Writer would.
func writeRecords(t *testing.T, path string, n, size int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	text := bytes.Repeat([]byte("y"), size)
	var buf []byte
	for i := range n {
		copy(text, fmt.Sprintf("%09d", i))
		buf = appendRecord(buf, Line{Time: at, Stream: Stdout, Text: text})
		if len(buf) > 1<<20 {
			if _, err := f.Write(buf); err != nil {
				t.Fatal(err)
			}
			buf = buf[:0]
		}
	}
	if _, err := f.Write(buf); err != nil {
		t.Fatal(err)
	}
}

// readBytes returns what this process has read through read system calls
// so far (rchar in /proc/self/io): page cache hits included, which is what
// matters here.
func readBytes(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "rchar: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no rchar in /proc/self/io")
	return 0
}

func TestTailSeeksFromTheEndOfALargeLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.log")
	const lines = 250_000 // about 25 MB
	writeRecords(t, path, lines-1, 60)
	// The newest file is small and the rest sits in a rotated one, so the
	// tail's last line is in one file and the one before it in the other.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	writeRecords(t, path, 1, 60)
	for _, tail := range []int{1, 2, 100} {
		var got []string
		var ms0, ms1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms0)
		read0 := readBytes(t)
		err := Stream(context.Background(), path, StreamOptions{Tail: tail}, func(ls []Line) error {
			for _, l := range ls {
				got = append(got, string(l.Text[:9]))
			}
			return nil
		})
		read := readBytes(t) - read0
		runtime.ReadMemStats(&ms1)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != tail {
			t.Fatalf("tail %d gave %d lines", tail, len(got))
		}
		// The newest file holds line 0 again (written on its own).
		if tail == 1 && got[0] != "000000000" || tail > 1 && got[len(got)-2] != fmt.Sprintf("%09d", lines-2) {
			t.Errorf("tail %d = ...%v", tail, got[max(0, len(got)-2):])
		}
		if read > 1<<20 {
			t.Errorf("tail %d read %d bytes of a 25 MB log, want it to seek from the end (< 1 MiB)", tail, read)
		}
		if alloc := ms1.TotalAlloc - ms0.TotalAlloc; alloc > 2<<20 {
			t.Errorf("tail %d allocated %d bytes, want < 2 MiB", tail, alloc)
		}
	}
}

// TestTailMatchesTheEndOfTheWholeLog checks the backward scan against the
// forward read on a log whose streams interleave, whose long lines are
// split into partial records and which spans rotated files.
func TestTailMatchesTheEndOfTheWholeLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mixed.log")
	w, err := Create(path, WithRotation(64<<10, 4))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		stream := Stdout
		if rng.IntN(3) == 0 {
			stream = Stderr
		}
		text := fmt.Appendf(nil, "%s-%03d-", stream, i)
		text = append(text, bytes.Repeat([]byte("z"), rng.IntN(3)*MaxLineSize/2+rng.IntN(50))...)
		// Interleave: a long line's pieces are written apart, with the
		// other stream's lines between them.
		if len(text) > MaxLineSize && rng.IntN(2) == 0 {
			other := map[string]string{Stdout: Stderr, Stderr: Stdout}[stream]
			if err := w.Write(stream, true, text[:MaxLineSize]); err != nil {
				t.Fatal(err)
			}
			if err := w.Write(other, false, fmt.Appendf(nil, "%s-%03d-between", other, i)); err != nil {
				t.Fatal(err)
			}
			text = text[MaxLineSize:]
		}
		if err := w.Write(stream, false, text); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	if _, err := os.Stat(path + ".3"); err != nil {
		t.Fatalf("want the log rotated into 4 files: %v", err)
	}
	all := streamTexts(t, path, StreamOptions{})
	for tail := 1; tail <= len(all)+2; tail++ {
		got := streamTexts(t, path, StreamOptions{Tail: tail})
		want := all[max(0, len(all)-tail):]
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("tail %d: %d lines, first %.20q; want %d lines, first %.20q", tail, len(got), got[0], len(want), want[0])
		}
	}
}

func TestStreamBatchesAreBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.log")
	w, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 600 {
		// Lines of 10 KB and two of 200 KB (joined from partial records).
		size := 10_000
		if i%300 == 7 {
			size = 200_000
		}
		if err := w.Write(Stdout, false, bytes.Repeat([]byte{'a' + byte(i%26)}, size)); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	for _, limit := range []int{0, 300_000} {
		batches, lines, bytesSent := 0, 0, 0
		err := Stream(context.Background(), path, StreamOptions{MaxBatchBytes: limit}, func(ls []Line) error {
			batches++
			size := 0
			for _, l := range ls {
				size += len(l.Text) + LineOverhead
			}
			if want := cmpOr(limit, DefaultBatchBytes); size > want {
				t.Errorf("a batch of %d lines holds %d bytes, past %d", len(ls), size, want)
			}
			lines += len(ls)
			bytesSent += size - len(ls)*LineOverhead
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if lines != 600 || bytesSent != 598*10_000+2*200_000 {
			t.Errorf("limit %d: %d lines, %d bytes sent; want all 600 lines", limit, lines, bytesSent)
		}
		if batches < 6 {
			t.Errorf("limit %d: %d batches for 6.4 MB", limit, batches)
		}
	}
}

func cmpOr(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

// TestReaderBoundsWhatItAcceptsFromALine: the log file is fed by a sandbox,
// so neither an endless chain of partial records nor a record far longer
// than the driver writes makes the reader hold it.
func TestReaderBoundsWhatItAcceptsFromALine(t *testing.T) {
	dir := t.TempDir()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	t.Run("partial records join up to MaxJoinedLine", func(t *testing.T) {
		path := filepath.Join(dir, "p.log")
		w, err := Create(path)
		if err != nil {
			t.Fatal(err)
		}
		long := bytes.Repeat([]byte("0123456789"), 100_000) // 1 MB, never ended
		if err := w.Write(Stdout, true, long); err != nil {
			t.Fatal(err)
		}
		if err := w.Write(Stdout, false, []byte("end")); err != nil {
			t.Fatal(err)
		}
		w.Close()
		raw, _ := os.ReadFile(path)
		if n := bytes.Count(raw, []byte(" stdout P ")); n != len(long)/MaxLineSize+1 {
			t.Errorf("%d partial records, want the line split every %d bytes", n, MaxLineSize)
		}
		var joined []byte
		for _, l := range streamTexts(t, path, StreamOptions{}) {
			if len(l) > MaxJoinedLine {
				t.Errorf("a line of %d bytes, past MaxJoinedLine", len(l))
			}
			joined = append(joined, l...)
		}
		if !bytes.Equal(joined, append(long, "end"...)) {
			t.Errorf("the pieces hold %d bytes, want the %d written, in order", len(joined), len(long)+3)
		}
		// Every piece but the last says the line goes on.
		var partial []bool
		if err := Stream(context.Background(), path, StreamOptions{}, func(ls []Line) error {
			for _, l := range ls {
				partial = append(partial, l.Partial)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for i, p := range partial {
			if want := i < len(partial)-1; p != want {
				t.Errorf("piece %d of %d: partial %v, want %v", i+1, len(partial), p, want)
			}
		}
		if len(partial) < 2 {
			t.Errorf("%d pieces, want the line cut", len(partial))
		}
	})
	t.Run("pieces end on a character's boundary", func(t *testing.T) {
		path := filepath.Join(dir, "u.log")
		w, err := Create(path)
		if err != nil {
			t.Fatal(err)
		}
		// One byte, then two-byte characters: a cut at an even offset
		// falls inside one.
		long := append([]byte("x"), bytes.Repeat([]byte("é"), 300_000)...)
		for rest := long; len(rest) > 0; {
			n := min(len(rest), 1000)
			if err := w.Write(Stdout, true, rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		if err := w.Write(Stdout, false, nil); err != nil {
			t.Fatal(err)
		}
		w.Close()
		var joined []byte
		for i, l := range streamTexts(t, path, StreamOptions{}) {
			if !utf8.ValidString(l) {
				t.Errorf("piece %d (%d bytes) is not valid UTF-8", i+1, len(l))
			}
			joined = append(joined, l...)
		}
		if !bytes.Equal(joined, long) {
			t.Errorf("the pieces hold %d bytes, want the %d written, in order", len(joined), len(long))
		}
	})
	t.Run("an over-long record is skipped", func(t *testing.T) {
		path := filepath.Join(dir, "o.log")
		var b []byte
		b = appendRecord(b, Line{Time: at, Stream: Stdout, Text: []byte("before")})
		b = appendRecord(b, Line{Time: at, Stream: Stdout, Text: bytes.Repeat([]byte("x"), 8<<20)})
		b = appendRecord(b, Line{Time: at, Stream: Stdout, Text: []byte("after")})
		// and one never ended
		b = append(b, at.Format(time.RFC3339Nano)+" stdout F "...)
		b = append(b, bytes.Repeat([]byte("x"), 4<<20)...)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, opts := range []StreamOptions{{}, {Tail: 1}, {Tail: 5}} {
			var ms0, ms1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms0)
			got := streamTexts(t, path, opts)
			runtime.ReadMemStats(&ms1)
			want := []string{"before", "after"}
			if opts.Tail == 1 {
				want = want[1:]
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("tail %d read %.40q, want %q", opts.Tail, got, want)
			}
			if alloc := ms1.TotalAlloc - ms0.TotalAlloc; alloc > 1<<20 {
				t.Errorf("tail %d allocated %d bytes reading over-long records, want < 1 MiB", opts.Tail, alloc)
			}
		}
	})
}

func streamTexts(t *testing.T, path string, opts StreamOptions) []string {
	t.Helper()
	var out []string
	err := Stream(context.Background(), path, opts, func(ls []Line) error {
		for _, l := range ls {
			out = append(out, string(l.Text))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTailLooksBackABoundedWayForALinesPieces: a line's partial records may
// lie behind records of the other stream, so tail looks back past its N
// lines for them, but only so far: a line alone on its stream after
// megabytes of the other one costs tail about what a short log does (it
// used to read the whole log backwards and then forwards). A line whose
// pieces lie further back starts mid-way, as a line longer than
// MaxJoinedLine may.
func TestTailLooksBackABoundedWayForALinesPieces(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rec := func(b []byte, stream string, partial bool, text string) []byte {
		return appendRecord(b, Line{Time: at, Stream: stream, Partial: partial, Text: []byte(text)})
	}
	// stdout appends full stdout records of 80 bytes up to size bytes more.
	stdout := func(b []byte, size int) []byte {
		for end := len(b) + size; len(b) < end; {
			b = rec(b, Stdout, false, fmt.Sprintf("out %09d %s", len(b), strings.Repeat("x", 30)))
		}
		return b
	}
	const mb = 1 << 20
	tests := []struct {
		name string
		// files are the log's, oldest first; the last is the live one.
		files [][]byte
		tail  int
		want  []string
	}{{
		name:  "a lone stderr line after 8 MB of stdout in rotated files",
		files: [][]byte{stdout(nil, 4*mb), stdout(nil, 4*mb), rec(stdout(nil, 1000), Stderr, false, "the last line")},
		tail:  1,
		want:  []string{"stderr:the last line"},
	}, {
		name:  "the last three lines, one of them alone on its stream",
		files: [][]byte{stdout(nil, 8*mb), rec(rec(rec(nil, Stdout, false, "o1"), Stdout, false, "o2"), Stderr, false, "e")},
		tail:  3,
		want:  []string{"stdout:o1", "stdout:o2", "stderr:e"},
	}, {
		name:  "a line whose piece lies 100 KB back is whole",
		files: [][]byte{rec(stdout(rec(stdout(nil, 8*mb), Stderr, true, "head-"), 100<<10), Stderr, false, "end")},
		tail:  1,
		want:  []string{"stderr:head-end"},
	}, {
		name:  "a line whose piece lies 2 MB back starts mid-way",
		files: [][]byte{rec(stdout(rec(stdout(nil, 8*mb), Stderr, true, "lost-"), 2*mb), Stderr, false, "end")},
		tail:  1,
		want:  []string{"stderr:end"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "lone.log")
			size := 0
			for i, b := range tt.files {
				size += len(b)
				p := path
				if n := len(tt.files) - 1 - i; n > 0 {
					p = fmt.Sprintf("%s.%d", path, n)
				}
				if err := os.WriteFile(p, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var got []string
			read0 := readBytes(t)
			err := Stream(context.Background(), path, StreamOptions{Tail: tt.tail}, func(ls []Line) error {
				for _, l := range ls {
					got = append(got, l.Stream+":"+string(l.Text))
				}
				return nil
			})
			read := readBytes(t) - read0
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("tail %d = %.80q, want %q", tt.tail, got, tt.want)
			}
			// How far tail looks back (two joined lines' worth), read
			// backwards and then forwards, with a chunk either way.
			if bound := 6 * MaxJoinedLine; read > int64(bound) {
				t.Errorf("tail %d read %d bytes of a log of %d, want at most %d", tt.tail, read, size, bound)
			}
		})
	}
}

// TestTailPastItsReachCutsOnlyAStreamsFirstLine checks the backward scan
// against the forward read on a log far longer than tailReach, where one
// stream's lines are rare and their pieces lie apart, some closer than
// tailReach and some further: tail gives the last lines of the whole log,
// except that the first line of each stream may have lost its beginning.
func TestTailPastItsReachCutsOnlyAStreamsFirstLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rare.log")
	w, err := Create(path, WithRotation(2<<20, 4))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	out := 0
	stdout := func(size int) {
		for end := out + size; out < end; {
			text := fmt.Appendf(nil, "out-%07d-%s", out, bytes.Repeat([]byte("o"), rng.IntN(120)))
			if err := w.Write(Stdout, false, text); err != nil {
				t.Fatal(err)
			}
			out += len(text)
		}
	}
	for i := range 12 {
		// A stderr line of one to three pieces, with up to 3*tailReach/2
		// of stdout between them and after the line.
		pieces := 1 + rng.IntN(3)
		for p := range pieces {
			text := fmt.Appendf(nil, "err-%02d-%d-", i, p)
			partial := p < pieces-1
			if partial {
				text = append(text, bytes.Repeat([]byte("e"), MaxLineSize-len(text))...)
			}
			if err := w.Write(Stderr, partial, text); err != nil {
				t.Fatal(err)
			}
			stdout(rng.IntN(3 * tailReach / 2))
		}
	}
	w.Close()
	if _, err := os.Stat(path + ".3"); err != nil {
		t.Fatalf("want the log rotated into 4 files: %v", err)
	}
	all := streamLines(t, path, StreamOptions{})
	tails := []int{1, 2, 3, 10, 100, 1000}
	for range 20 {
		tails = append(tails, 1+rng.IntN(len(all)))
	}
	cut := 0
	for _, tail := range tails {
		got := streamLines(t, path, StreamOptions{Tail: tail})
		want := all[max(0, len(all)-tail):]
		if len(got) != len(want) {
			t.Fatalf("tail %d: %d lines, want %d", tail, len(got), len(want))
		}
		first := map[string]bool{}
		for k, g := range got {
			wk := want[k]
			ok := g.Stream == wk.Stream && bytes.Equal(g.Text, wk.Text)
			if !first[g.Stream] {
				first[g.Stream] = true
				ok = g.Stream == wk.Stream && bytes.HasSuffix(wk.Text, g.Text)
				if ok && len(g.Text) < len(wk.Text) {
					cut++
				}
			}
			if !ok {
				t.Fatalf("tail %d: line %d is %s %.30q, want %s %.30q", tail, k, g.Stream, g.Text, wk.Stream, wk.Text)
			}
		}
	}
	if cut == 0 {
		t.Errorf("no tail of %d started a line mid-way: the log does not test the reach", len(tails))
	}
}

func streamLines(t *testing.T, path string, opts StreamOptions) []Line {
	t.Helper()
	var out []Line
	err := Stream(context.Background(), path, opts, func(ls []Line) error {
		out = append(out, ls...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTailOfALineNeverEndedIsBounded: a sandbox that writes without a
// newline fills its log with partial records and no full one. Tail looks
// back about as far as its lines can be long and no further: it used to
// read such a log backwards to its beginning, then forwards, and send all of
// it in lines of MaxJoinedLine.
func TestTailOfALineNeverEndedIsBounded(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	piece := bytes.Repeat([]byte("p"), MaxLineSize)
	// partial appends size bytes of partial stdout records.
	partial := func(b []byte, size int) []byte {
		for end := len(b) + size; len(b) < end; {
			b = appendRecord(b, Line{Time: at, Stream: Stdout, Partial: true, Text: piece})
		}
		return b
	}
	full := func(b []byte, text string) []byte {
		return appendRecord(b, Line{Time: at, Stream: Stdout, Text: []byte(text)})
	}
	// long appends a line of 11 partial records and "end".
	long := func(b []byte) []byte { return full(partial(b, 11*MaxLineSize+1), "end") }
	const mb = 1 << 20
	tests := []struct {
		name  string
		files [][]byte // oldest first; the last is the live one
		tail  int
		// sent bounds the bytes of text sent; want, if set, is the
		// length of each line sent.
		sent int
		want []int
	}{
		{name: "only partial records, rotated", files: [][]byte{partial(nil, 4*mb), partial(nil, 4*mb)}, tail: 1, sent: 3 * MaxJoinedLine},
		{name: "a line, then 8 MB never ended", files: [][]byte{partial(full(nil, "done"), 8*mb)}, tail: 1, sent: 3 * MaxJoinedLine},
		{name: "8 MB never ended, then a newline", files: [][]byte{full(partial(nil, 8*mb), "done")}, tail: 1, sent: 3 * MaxJoinedLine},
		{
			name: "long lines are whole", files: [][]byte{long(long(long(full(partial(nil, 8*mb), "done"))))}, tail: 3,
			sent: 3 * MaxJoinedLine, want: []int{11*MaxLineSize + 3, 11*MaxLineSize + 3, 11*MaxLineSize + 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "endless.log")
			size := 0
			for i, b := range tt.files {
				size += len(b)
				p := path
				if n := len(tt.files) - 1 - i; n > 0 {
					p = fmt.Sprintf("%s.%d", path, n)
				}
				if err := os.WriteFile(p, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			sent, lens := 0, []int{}
			read0 := readBytes(t)
			err := Stream(context.Background(), path, StreamOptions{Tail: tt.tail}, func(ls []Line) error {
				for _, l := range ls {
					sent += len(l.Text)
					lens = append(lens, len(l.Text))
				}
				return nil
			})
			read := readBytes(t) - read0
			if err != nil {
				t.Fatal(err)
			}
			if sent > tt.sent {
				t.Errorf("tail %d sent %d bytes of text, want at most %d", tt.tail, sent, tt.sent)
			}
			if tt.want != nil && !slices.Equal(lens, tt.want) {
				t.Errorf("tail %d sent lines of %v bytes, want %v", tt.tail, lens, tt.want)
			}
			// About two reaches of a line, backwards and forwards.
			if bound := 8 * MaxJoinedLine; read > int64(bound) {
				t.Errorf("tail %d read %d bytes of a log of %d, want at most %d", tt.tail, read, size, bound)
			}
		})
	}
}
