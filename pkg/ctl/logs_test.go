package ctl

import (
	"context"
	"strings"
	"testing"
	"time"

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
	c, _, _ := client(t, serve(t, newFake()), testToken, "")
	for _, o := range []LogsOptions{{}, {Name: "demo", Tail: -1}} {
		if err := c.Logs(context.Background(), o); !IsUsage(err) {
			t.Errorf("Logs(%+v) = %v, want a usage error", o, err)
		}
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
