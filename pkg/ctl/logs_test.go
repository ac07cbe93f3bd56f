package ctl

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

var logStart = time.Date(2026, 11, 26, 23, 4, 5, 123000000, time.UTC)

func line(stream, text string, offset time.Duration) *fsbv1.LogLine {
	return &fsbv1.LogLine{Stream: stream, Text: text, Time: timestamppb.New(logStart.Add(offset))}
}

func TestLogs(t *testing.T) {
	f := newFake()
	f.add("default", "demo", "busybox", time.Minute)
	f.logs["default/demo"] = []*fsbv1.LogLine{
		line("stdout", "hello", 0),
		line("stderr", "warning: low on coffee", time.Millisecond),
		line("stdout", "bye", 2*time.Millisecond),
	}
	tests := []struct {
		name             string
		opts             LogsOptions
		wantOut, wantErr string
	}{
		{"all lines, split by stream", LogsOptions{Name: "demo"}, "hello\nbye\n", "warning: low on coffee\n"},
		{"tail", LogsOptions{Name: "demo", Tail: 1}, "bye\n", ""},
		{"timestamps", LogsOptions{Name: "demo", Tail: 2, Timestamps: true},
			"2026-11-26T23:04:05.125Z bye\n", "2026-11-26T23:04:05.124Z warning: low on coffee\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, out, errw := client(t, serve(t, f), testToken, "")
			if err := c.Logs(context.Background(), tt.opts); err != nil {
				t.Fatal(err)
			}
			if out.String() != tt.wantOut || errw.String() != tt.wantErr {
				t.Errorf("stdout %q stderr %q, want %q and %q", out, errw, tt.wantOut, tt.wantErr)
			}
		})
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if req := f.logReqs[1]; req.GetName() != "demo" || req.GetNamespace() != "default" || req.GetTail() != 1 || req.GetFollow() {
		t.Errorf("request %v, want demo in default, tail 1, no follow", req)
	}
}

// TestLogsPartialPieces: a line that comes in pieces (partial set on all
// but the last) is printed as one line, with one timestamp, even when a
// line of the other stream comes between its pieces.
func TestLogsPartialPieces(t *testing.T) {
	f := newFake()
	f.add("default", "demo", "busybox", time.Minute)
	piece := func(stream, text string, offset time.Duration) *fsbv1.LogLine {
		l := line(stream, text, offset)
		l.Partial = true
		return l
	}
	f.logs["default/demo"] = []*fsbv1.LogLine{
		piece("stdout", "aaa", 0),
		line("stderr", "oops", time.Millisecond),
		piece("stdout", "bbb", 2*time.Millisecond),
		line("stdout", "ccc", 3*time.Millisecond),
		line("stdout", "next", 4*time.Millisecond),
	}
	c, out, errw := client(t, serve(t, f), testToken, "")
	if err := c.Logs(context.Background(), LogsOptions{Name: "demo", Timestamps: true}); err != nil {
		t.Fatal(err)
	}
	wantOut := "2026-11-26T23:04:05.123Z aaabbbccc\n2026-11-26T23:04:05.127Z next\n"
	wantErr := "2026-11-26T23:04:05.124Z oops\n"
	if out.String() != wantOut || errw.String() != wantErr {
		t.Errorf("stdout %q stderr %q, want %q and %q", out, errw, wantOut, wantErr)
	}
}

// TestLogsFollow checks that -f prints lines as they come, while the stream
// is still open, and returns once the server ends the stream.
func TestLogsFollow(t *testing.T) {
	f := newFake()
	f.add("default", "demo", "busybox", time.Minute)
	f.logs["default/demo"] = []*fsbv1.LogLine{line("stdout", "first", 0)}
	f.followGate = make(chan struct{})
	f.followLines = []*fsbv1.LogLine{line("stdout", "second", time.Second), line("stderr", "exiting", time.Second)}
	c, out, errw := client(t, serve(t, f), testToken, "")

	done := make(chan error, 1)
	go func() { done <- c.Logs(context.Background(), LogsOptions{Name: "demo", Follow: true}) }()

	waitFor(t, func() bool { return out.String() == "first\n" }, "the first line while the stream is open")
	select {
	case err := <-done:
		t.Fatalf("logs -f returned (%v) while the server still held the stream open", err)
	default:
	}
	close(f.followGate)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("logs -f did not return after the server ended the stream")
	}
	if out.String() != "first\nsecond\n" || errw.String() != "exiting\n" {
		t.Errorf("stdout %q stderr %q", out, errw)
	}
	if !f.logReqs[0].GetFollow() {
		t.Error("the request did not ask to follow")
	}
}

// TestLogsFollowInterrupted checks that Ctrl-C (the context ending) ends a
// follow quietly.
func TestLogsFollowInterrupted(t *testing.T) {
	f := newFake()
	f.add("default", "demo", "busybox", time.Minute)
	f.logs["default/demo"] = []*fsbv1.LogLine{line("stdout", "first", 0)}
	f.followGate = make(chan struct{}) // never closed
	c, out, _ := client(t, serve(t, f), testToken, "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Logs(ctx, LogsOptions{Name: "demo", Follow: true}) }()
	waitFor(t, func() bool { return out.String() == "first\n" }, "the first line")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("an interrupted follow returned %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("logs -f did not end with its context")
	}
}

func TestLogsUsage(t *testing.T) {
	f := newFake()
	c, _, _ := client(t, serve(t, f), testToken, "")
	zero, negative, one := int64(0), int64(-1), int64(1)
	for _, tt := range []struct {
		opts LogsOptions
		want string
	}{
		{LogsOptions{}, "logs needs a sandbox name"},
		{LogsOptions{Name: "demo", Tail: -1}, "--tail -1"},
		{LogsOptions{Name: "demo", Revision: &zero}, "--revision 0: want a revision number, 1 or more (fsb ctl get demo shows the current one)"},
		{LogsOptions{Name: "demo", Revision: &negative}, "--revision -1: want a revision number, 1 or more"},
		{LogsOptions{Name: "demo", Revision: &one, Previous: true}, "--revision and --previous both name a revision: pick one"},
	} {
		if err := c.Logs(context.Background(), tt.opts); !IsUsage(err) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Logs(%+v) = %v, want a usage error with %q", tt.opts, err, tt.want)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.logReqs) != 0 {
		t.Errorf("%d requests sent; a usage error sends none", len(f.logReqs))
	}
}

// TestLogsRevision checks that --revision and --previous read an earlier
// revision's log, as the example: an AutoRecreate sandbox that
// exited is at revision 2, and revision 1's log shows "up".
func TestLogsRevision(t *testing.T) {
	f := newFake()
	f.add("default", "crash", "busybox", time.Minute).Status.Revision = 2
	f.logs["default/crash"] = []*fsbv1.LogLine{line("stdout", "up again", time.Minute)}
	f.oldLogs = map[string]map[int64][]*fsbv1.LogLine{"default/crash": {1: {line("stdout", "up", 0), line("stderr", "exit 3", time.Second)}}}
	one, three := int64(1), int64(3)
	tests := []struct {
		name             string
		opts             LogsOptions
		want             *fsbv1.StreamLogsRequest
		wantOut, wantErr string
	}{
		{"current", LogsOptions{Name: "crash"},
			&fsbv1.StreamLogsRequest{Name: "crash", Namespace: "default"}, "up again\n", ""},
		{"revision 1", LogsOptions{Name: "crash", Revision: &one},
			&fsbv1.StreamLogsRequest{Name: "crash", Namespace: "default", Revision: 1}, "up\n", "exit 3\n"},
		{"previous", LogsOptions{Name: "crash", Previous: true, Tail: 1},
			&fsbv1.StreamLogsRequest{Name: "crash", Namespace: "default", Previous: true, Tail: 1}, "", "exit 3\n"},
		{"revision 1 followed", LogsOptions{Name: "crash", Revision: &one, Follow: true},
			&fsbv1.StreamLogsRequest{Name: "crash", Namespace: "default", Revision: 1, Follow: true}, "up\n", "exit 3\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, out, errw := client(t, serve(t, f), testToken, "")
			if err := c.Logs(context.Background(), tt.opts); err != nil {
				t.Fatal(err)
			}
			if out.String() != tt.wantOut || errw.String() != tt.wantErr {
				t.Errorf("stdout %q stderr %q, want %q and %q", out, errw, tt.wantOut, tt.wantErr)
			}
			f.mu.Lock()
			got := f.logReqs[len(f.logReqs)-1]
			f.mu.Unlock()
			if !proto.Equal(got, tt.want) {
				t.Errorf("request %v, want %v", got, tt.want)
			}
		})
	}

	c, _, _ := client(t, serve(t, f), testToken, "")
	err := c.Logs(context.Background(), LogsOptions{Name: "crash", Revision: &three})
	if want := "no log of revision 3 of sandbox crash in namespace default: revision 3 of sandbox default/crash has no log kept"; err == nil || err.Error() != want {
		t.Errorf("err = %v, want %q", err, want)
	}
	err = c.Logs(context.Background(), LogsOptions{Name: "ghost", Previous: true})
	if want := "no log of a previous revision of sandbox ghost in namespace default: no such sandbox"; err == nil || err.Error() != want {
		t.Errorf("err = %v, want %q", err, want)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLogsStreamNotFound(t *testing.T) {
	c, _, _ := client(t, serve(t, newFake()), testToken, "team")
	err := c.Logs(context.Background(), LogsOptions{Name: "ghost", Follow: true})
	if err == nil || err.Error() != "sandbox ghost not found in namespace team" {
		t.Errorf("err = %v", err)
	}
	if strings.Contains(err.Error(), "not_found") {
		t.Errorf("err %q leaks the code", err)
	}
}
