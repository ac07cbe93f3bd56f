package agent

import (
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/logfile"
)

// MaxLogMessageBytes bounds the encoding of one StreamLogs message, whatever
// the request asks: a tail of a million lines or a whole 25 MB log goes out
// as many messages, so neither the agent nor a client holds more than this
// of a log per call. A line is at most logfile.MaxJoinedLine, so every
// message holds at least one.
const MaxLogMessageBytes = 1 << 20

// logStreamOptions are the reader's options for a StreamLogs request: its
// batches stay within a message.
func logStreamOptions(tail int, follow bool, done func() bool) logfile.StreamOptions {
	return logfile.StreamOptions{Tail: tail, Follow: follow, Done: done, MaxBatchBytes: MaxLogMessageBytes}
}

// logSender turns the reader's batches into StreamLogs messages of at most
// MaxLogMessageBytes encoded, counted exactly: text that is not UTF-8 (a
// sandbox may write anything) becomes U+FFFD, as a protobuf string must be
// valid UTF-8, and that can make a line longer than the reader counted it.
func logSender(send func(*fsbv1.AgentServiceStreamLogsResponse) error) func([]logfile.Line) error {
	return func(lines []logfile.Line) error {
		resp := &fsbv1.AgentServiceStreamLogsResponse{}
		size := 0
		for _, l := range lines {
			ll := &fsbv1.LogLine{Time: timestamppb.New(l.Time), Stream: l.Stream, Text: strings.ToValidUTF8(string(l.Text), "\uFFFD"), Partial: l.Partial}
			n := protowire.SizeTag(1) + protowire.SizeBytes(proto.Size(ll))
			if len(resp.Lines) > 0 && size+n > MaxLogMessageBytes {
				if err := send(resp); err != nil {
					return err
				}
				resp, size = &fsbv1.AgentServiceStreamLogsResponse{}, 0
			}
			resp.Lines = append(resp.Lines, ll)
			size += n
		}
		if len(resp.Lines) == 0 {
			return nil
		}
		return send(resp)
	}
}
