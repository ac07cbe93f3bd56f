package agent

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/logfile"
)

func TestLogMessagesStayUnderOneMiB(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, tc := range []struct {
		name  string
		lines []logfile.Line
	}{
		{"many short lines", repeatLine(logfile.Line{Time: at, Stream: logfile.Stdout, Text: []byte("hello")}, 200_000)},
		{"lines of the largest size", repeatLine(logfile.Line{Time: at, Stream: logfile.Stderr, Text: bytes.Repeat([]byte("x"), logfile.MaxJoinedLine)}, 9)},
		// Each invalid byte becomes a 3-byte U+FFFD: the reader counted a
		// third of what goes out.
		{"text that is not UTF-8", repeatLine(logfile.Line{Time: at, Stream: logfile.Stdout, Text: bytes.Repeat([]byte{0xff}, 200_000)}, 5)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			err := logSender(func(resp *fsbv1.AgentServiceStreamLogsResponse) error {
				b, err := proto.Marshal(resp)
				if err != nil {
					t.Fatalf("marshal: %v", err)
				}
				if len(b) > MaxLogMessageBytes {
					t.Errorf("a message of %d lines is %d bytes, past %d", len(resp.Lines), len(b), MaxLogMessageBytes)
				}
				for _, l := range resp.Lines {
					got = append(got, l.GetText())
				}
				return nil
			})(tc.lines)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.lines) {
				t.Fatalf("%d lines sent, want %d", len(got), len(tc.lines))
			}
			if want := strings.ToValidUTF8(string(tc.lines[0].Text), "\uFFFD"); got[0] != want {
				t.Errorf("first line %.20q, want %.20q", got[0], want)
			}
		})
	}
}

func repeatLine(l logfile.Line, n int) []logfile.Line {
	out := make([]logfile.Line, n)
	for i := range out {
		out[i] = l
	}
	return out
}
