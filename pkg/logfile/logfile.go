// Package logfile writes and reads sandbox log files.
//
// A log file holds one record per line in the CRI logging format that
// kubelet and crictl use:
//
//	2026-11-26T23:04:05.123456789Z stdout F hello world
//
// The tag is F for a full line and P for a part of a line longer than the
// writer's buffer; the parts that follow complete it. A file is rotated by
// size: path, path.1 (older), path.2 (older still) and so on.
package logfile

import (
	"bytes"
	"errors"
	"fmt"
	"time"
)

// Streams a line can come from.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

// Line is one record of a log file.
type Line struct {
	Time   time.Time
	Stream string
	// Partial is set when the text continues in the next record.
	Partial bool
	Text    []byte
}

// appendRecord formats l as one record, newline included.
func appendRecord(b []byte, l Line) []byte {
	b = l.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, ' ')
	b = append(b, l.Stream...)
	if l.Partial {
		b = append(b, " P "...)
	} else {
		b = append(b, " F "...)
	}
	b = append(b, l.Text...)
	return append(b, '\n')
}

// maxTimeLen is the longest time field a record may have; RFC 3339 with
// nanoseconds and a zone offset takes 35 bytes.
const maxTimeLen = 40

// maxHeaderLen bounds a record's header (time, stream, tag and the spaces
// between them): ParseLine looks no further for them, so a reader scanning
// a file backwards needs to keep only this much of each record to classify
// it.
const maxHeaderLen = maxTimeLen + len(" stdout P ")

// ParseLine parses one record without its trailing newline. Only the
// streams stdout and stderr and the tags F and P are accepted: the file is
// written by a process that a sandbox feeds, so a reader trusts nothing it
// did not check.
func ParseLine(rec []byte) (Line, error) {
	l, text, err := parseHeader(rec)
	if err != nil {
		return Line{}, err
	}
	l.Text = text
	return l, nil
}

// parseHeader parses the header of a record and returns the text after it;
// it reads at most maxHeaderLen bytes of rec to decide.
func parseHeader(rec []byte) (Line, []byte, error) {
	head := rec[:min(len(rec), maxHeaderLen)]
	sp := bytes.IndexByte(head, ' ')
	if sp < 0 || sp > maxTimeLen {
		return Line{}, nil, fmt.Errorf("log record %.60q: want \"TIME STREAM TAG TEXT\"", rec)
	}
	t, err := time.Parse(time.RFC3339Nano, string(head[:sp]))
	if err != nil {
		return Line{}, nil, fmt.Errorf("log record time: %w", err)
	}
	rest := rec[sp+1:]
	var l Line
	switch {
	case bytes.HasPrefix(rest, []byte(Stdout+" ")):
		l.Stream = Stdout
	case bytes.HasPrefix(rest, []byte(Stderr+" ")):
		l.Stream = Stderr
	default:
		return Line{}, nil, errors.New("log record stream: want stdout or stderr")
	}
	rest = rest[len(l.Stream)+1:]
	if len(rest) == 0 || (rest[0] != 'F' && rest[0] != 'P') || (len(rest) > 1 && rest[1] != ' ') {
		return Line{}, nil, errors.New("log record tag: want F or P")
	}
	l.Time, l.Partial = t, rest[0] == 'P'
	if len(rest) > 2 {
		return l, rest[2:], nil
	}
	return l, nil, nil
}
