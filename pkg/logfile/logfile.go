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

// ParseLine parses one record without its trailing newline.
func ParseLine(rec []byte) (Line, error) {
	fields := bytes.SplitN(rec, []byte{' '}, 4)
	if len(fields) < 3 {
		return Line{}, fmt.Errorf("log record %q: want \"TIME STREAM TAG TEXT\"", rec)
	}
	t, err := time.Parse(time.RFC3339Nano, string(fields[0]))
	if err != nil {
		return Line{}, fmt.Errorf("log record time: %w", err)
	}
	l := Line{Time: t, Stream: string(fields[1])}
	switch string(fields[2]) {
	case "F":
	case "P":
		l.Partial = true
	default:
		return Line{}, errors.New("log record tag: want F or P")
	}
	if len(fields) == 4 {
		l.Text = fields[3]
	}
	return l, nil
}
