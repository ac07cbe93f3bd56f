package logfile

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSwitchLogStartsTheFileWithWhatItHeld: a warm sandbox's driver holds
// the output written before the switch (the main process's first output,
// which the claim starts beside the switch) and writes it first.
func TestSwitchLogStartsTheFileWithWhatItHeld(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// Short: a unix socket's path is bounded.
	sockDir, err := os.MkdirTemp("", "fsb-ctl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "c")
	w := Pending()
	defer w.Close()
	stop, err := serveControl(sock, w)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(Stdout, false, []byte("first output")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	path := filepath.Join(dir, "ns", "name", "sb-1.log")
	cfg := DriverConfig{Path: path, MaxSize: 1 << 20, MaxFiles: 2}
	if err := SwitchLog(ctx, sock, cfg); err != nil {
		t.Fatalf("switch: %v", err)
	}
	if err := w.Write(Stdout, false, []byte("claimed output")); err != nil {
		t.Fatal(err)
	}
	// A retried switch to the same file is harmless; another file is refused.
	if err := SwitchLog(ctx, sock, cfg); err != nil {
		t.Fatalf("repeated switch: %v", err)
	}
	if err := SwitchLog(ctx, sock, DriverConfig{Path: filepath.Join(dir, "other.log")}); err == nil || !strings.Contains(err.Error(), "already") {
		t.Fatalf("switch to another file: %v, want a refusal", err)
	}
	if got := readAll(t, path); !slices.Equal(got, []string{"first output", "claimed output"}) {
		t.Fatalf("log holds %q, want what was held, then what came after the switch", got)
	}
	stop()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("control socket left after stop: %v", err)
	}
	if err := SwitchLog(ctx, sock, cfg); err == nil {
		t.Fatal("switch after stop succeeded")
	}
}

func TestDriverConfigControlRoundTrip(t *testing.T) {
	in := DriverConfig{Control: "/run/x/c.l", MaxFiles: 1}
	out, err := ParseDriverConfig(in.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if out.Control != in.Control || out.Path != "" {
		t.Fatalf("round trip of %+v gave %+v", in, out)
	}
	if _, err := ParseDriverConfig(""); err == nil {
		t.Fatal("a config with neither path nor control was accepted")
	}
}

// TestPendingWriterWaitsWhenFull: a pending Writer holds MaxHeld at most;
// a Write beyond waits for the switch (so the sandbox waits, and nothing is
// lost), and every line reaches the file in order.
func TestPendingWriterWaitsWhenFull(t *testing.T) {
	t.Parallel()
	w := Pending()
	defer w.Close()
	line := []byte(strings.Repeat("x", MaxLineSize))
	n := MaxHeld/MaxLineSize + 3
	done := make(chan error, 1)
	go func() {
		for i := range n {
			if err := w.Write(Stdout, false, append([]byte(strconv.Itoa(i)+" "), line[:100]...)); err != nil {
				done <- err
				return
			}
			if err := w.Write(Stdout, false, line); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		t.Fatalf("%d KiB written to a pending Writer without waiting (%v)", n*(MaxLineSize+100)>>10, err)
	case <-time.After(300 * time.Millisecond):
	}
	path := filepath.Join(t.TempDir(), "sb-1.log")
	if err := w.Switch(path); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := readAll(t, path)
	if len(got) != 2*n {
		t.Fatalf("log holds %d lines, want %d", len(got), 2*n)
	}
	for i := range n {
		if !strings.HasPrefix(got[2*i], strconv.Itoa(i)+" ") {
			t.Fatalf("line %d is %.10q, want the %dth written", 2*i, got[2*i], i)
		}
	}
}

// TestPendingWriterClosedDropsAndFreesWriters: closing a pending Writer
// (a warm sandbox removed) ends a Write waiting for room.
func TestPendingWriterClosedDropsAndFreesWriters(t *testing.T) {
	t.Parallel()
	w := Pending()
	line := []byte(strings.Repeat("x", MaxLineSize))
	done := make(chan error, 1)
	go func() {
		for range MaxHeld/MaxLineSize + 2 {
			if err := w.Write(Stdout, false, line); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	time.Sleep(100 * time.Millisecond)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a Write waiting for room did not end at Close")
	}
	if err := w.Switch(filepath.Join(t.TempDir(), "x.log")); err == nil {
		t.Fatal("switch of a closed Writer succeeded")
	}
}
