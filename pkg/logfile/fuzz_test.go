package logfile

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLogLine feeds the record parser, and the reader around it, what a
// sandbox might make of its log file. ParseLine never panics; a record it
// accepts formats back into one that parses the same; and Stream over the
// bytes as a file sends lines within its bounds.
func FuzzLogLine(f *testing.F) {
	f.Add([]byte("2026-11-26T23:04:05.123456789Z stdout F hello world"))
	f.Add([]byte("2026-11-26T23:04:05Z stderr P part"))
	f.Add([]byte("2026-11-26T23:04:05+02:00 stdout F"))
	f.Add([]byte("2026-11-26T23:04:05Z stdout F "))
	f.Add([]byte("2026-11-26T23:04:05Z stdin F x"))
	f.Add([]byte("2026-11-26T23:04:05Z stdout X x"))
	f.Add([]byte("2026-11-26T23:04:05Z stdout FF x"))
	f.Add([]byte("yesterday stdout F text"))
	f.Add([]byte("2026-11-26T23:04:05Z stdout P a\n2026-11-26T23:04:05Z stderr F b\n2026-11-26T23:04:05Z stdout F c\n"))
	f.Add([]byte(""))
	f.Add([]byte(" "))
	f.Add([]byte("\n\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if l, err := ParseLine(data); err == nil {
			if l.Stream != Stdout && l.Stream != Stderr {
				t.Fatalf("accepted stream %q", l.Stream)
			}
			rec := appendRecord(nil, l)
			again, err := ParseLine(rec[:len(rec)-1])
			if err != nil {
				t.Fatalf("%q parsed, but its record %q does not: %v", data, rec, err)
			}
			if !again.Time.Equal(l.Time) || again.Stream != l.Stream || again.Partial != l.Partial || !bytes.Equal(again.Text, l.Text) {
				t.Fatalf("round trip of %q: %+v, then %+v", data, l, again)
			}
		}
		path := filepath.Join(t.TempDir(), "f.log")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, opts := range []StreamOptions{{}, {Tail: 1}, {Tail: 3}} {
			n := 0
			err := Stream(context.Background(), path, opts, func(ls []Line) error {
				for _, l := range ls {
					if len(l.Text) > MaxJoinedLine {
						t.Fatalf("a line of %d bytes", len(l.Text))
					}
				}
				n += len(ls)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if opts.Tail > 0 && n > opts.Tail {
				t.Fatalf("tail %d sent %d lines", opts.Tail, n)
			}
		}
	})
}
