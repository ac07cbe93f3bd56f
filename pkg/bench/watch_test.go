package bench

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestWaitForLogWakesOnTheWrite waits for a log whose directory, and its
// parent, are made only after the wait began, with the recheck taken away:
// only inotify can end the wait, at the write and not before it.
func TestWaitForLogWakesOnTheWrite(t *testing.T) {
	old := recheck
	recheck = time.Hour
	t.Cleanup(func() { recheck = old })

	root := t.TempDir()
	dir := filepath.Join(root, "default", "sb-1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	type result struct {
		seen time.Time
		err  error
	}
	done := make(chan result, 1)
	go func() {
		seen, err := WaitForLog(ctx, dir)
		done <- result{seen, err}
	}()

	steps := []func() error{
		func() error { return os.Mkdir(filepath.Join(root, "default"), 0o755) },
		func() error { return os.Mkdir(dir, 0o755) },
		func() error { return os.WriteFile(filepath.Join(dir, "other.txt"), []byte("x"), 0o644) }, // not a log
		func() error { return os.WriteFile(filepath.Join(dir, "a-1.log"), nil, 0o644) },           // empty
	}
	for i, step := range steps {
		time.Sleep(20 * time.Millisecond) // let the wait settle on what is there
		if err := step(); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-done:
			t.Fatalf("the wait ended after step %d, before any output: %v %v", i, r.seen, r.err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	wrote := time.Now()
	f, err := os.OpenFile(filepath.Join(dir, "a-1.log"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("hello\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r := <-done
	if r.err != nil {
		t.Fatalf("wait: %v, want the write seen", r.err)
	}
	if ctx.Err() != nil {
		t.Fatal("the wait ended with its context, not at the write: inotify did not wake it")
	}
	if r.seen.Before(wrote) {
		t.Errorf("seen at %v, before the write at %v", r.seen, wrote)
	}
}

// TestWaitForOutputEndsWithItsContext: no output, the context ends, the
// wait says so.
func TestWaitForOutputEndsWithItsContext(t *testing.T) {
	old := recheck
	recheck = time.Hour
	t.Cleanup(func() { recheck = old })

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := WaitForOutput(ctx, filepath.Join(t.TempDir(), "out.log"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait: %v, want the context's deadline", err)
	}
}

// TestWaitForOutputSeesOutputAlreadyThere returns at once for a file
// written before the wait.
func TestWaitForOutputSeesOutputAlreadyThere(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.log")
	if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := WaitForOutput(ctx, path); err != nil {
		t.Fatal(err)
	}
}
