//go:build !fsbhelper

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/logfile"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// procStatusKB reads a field of /proc/<pid>/status in kB.
func procStatusKB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// procReadBytes is what process pid has read through read system calls so
// far (rchar in /proc/<pid>/io, page cache hits and sockets included).
func procReadBytes(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
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
	t.Fatalf("no rchar in /proc/%d/io", pid)
	return 0
}

// TestTailOfALargeLogKeepsTheAgentSmall: eight clients asking at once for
// the last line of a 25 MB log leave the agent process under 100 MB of
// resident memory at its peak (VmHWM of the real `fsb agent` process), and
// each call reads a few MB at most: the last line is alone on its stream,
// which must not send tail back through the whole log.
func TestTailOfALargeLogKeepsTheAgentSmall(t *testing.T) {
	_, ns := rig.Containerd(t)
	a := startAgent(t, ns, "e2e-tail", t.TempDir())
	sb := a.create("sb-big", "echo started; exec sleep 300")
	logPath := sb["logPath"].(string)
	waitFile(t, logPath, "started")
	// 25 MB of records appended to the live log, as the driver writes them
	// (the sandbox itself writes nothing more).
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	at := time.Now().UTC().Format(time.RFC3339Nano)
	for i := 0; i < 25_000_000/80; i++ {
		fmt.Fprintf(w, "%s stdout F line %09d %s\n", at, i, strings.Repeat("x", 30))
	}
	fmt.Fprintf(w, "%s stderr F the last line\n", at)
	if err := errors.Join(w.Flush(), f.Close()); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(logPath); fi.Size() < 25_000_000 {
		t.Fatalf("the log holds %d bytes, want 25 MB", fi.Size())
	}

	client := fsbv1connect.NewAgentServiceClient(http.DefaultClient, a.base, connect.WithInterceptors(auth.Bearer(a.token)))
	pid := a.cmd.Process.Pid
	before := procStatusKB(t, pid, "VmHWM")
	read0 := procReadBytes(t, pid)
	const calls = 3 * 8
	for round := range calls / 8 {
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				stream, err := client.StreamLogs(ctx, connect.NewRequest(&fsbv1.AgentServiceStreamLogsRequest{SandboxId: "sb-big", Tail: 1}))
				if err != nil {
					errs <- err
					return
				}
				var got []string
				for stream.Receive() {
					for _, l := range stream.Msg().GetLines() {
						got = append(got, l.GetStream()+": "+l.GetText())
					}
				}
				if err := stream.Err(); err != nil {
					errs <- err
				} else if len(got) != 1 || got[0] != "stderr: the last line" {
					errs <- fmt.Errorf("tail 1 = %.80q", got)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("round %d: %v", round, err)
		}
	}
	peak := procStatusKB(t, pid, "VmHWM")
	t.Logf("agent VmHWM %d kB before, %d kB after 24 tail calls (VmRSS now %d kB)", before, peak, procStatusKB(t, pid, "VmRSS"))
	if peak > 100<<10 {
		t.Errorf("the agent's resident memory peaked at %d MB, want under 100 MB", peak>>10)
	}
	read := procReadBytes(t, pid) - read0
	t.Logf("the agent read %d kB for %d tail calls", read>>10, calls)
	if read > calls*4<<20 {
		t.Errorf("the agent read %d MB for %d calls of tail 1 on a 25 MB log, want under 4 MB a call", read>>20, calls)
	}
}

// TestCreateDeleteCyclesLeaveNoLogs: with --log-retention 0 a deleted
// sandbox's logs go with it, directories included, however many come and
// go.
func TestCreateDeleteCyclesLeaveNoLogs(t *testing.T) {
	_, ns := rig.Containerd(t)
	dir := t.TempDir()
	a := startAgent(t, ns, "e2e-cycles", dir, "--log-retention", "0")
	const cycles = 200
	start := time.Now()
	for i := range cycles {
		id := fmt.Sprintf("sb-cycle-%d", i)
		code, out := a.call("CreateSandbox", a.token, map[string]any{
			"sandboxId": id, "revision": 1, "namespace": "default", "name": id,
			"spec": map[string]any{"image": rig.ImageRef, "command": []string{"echo", "hello"}, "runtime": "crun"},
		})
		if code != http.StatusOK {
			t.Fatalf("CreateSandbox %s: HTTP %d %v\nagent log:\n%s", id, code, out, a.stderr.String())
		}
		if code, out := a.call("DeleteSandbox", a.token, map[string]any{"sandboxId": id, "gracePeriodSeconds": 0}); code != http.StatusOK {
			t.Fatalf("DeleteSandbox %s: HTTP %d %v", id, code, out)
		}
	}
	t.Logf("%d create/delete cycles took %v", cycles, time.Since(start).Round(time.Millisecond))
	var left []string
	logs := filepath.Join(dir, "logs")
	filepath.WalkDir(logs, func(p string, d os.DirEntry, err error) error {
		if err == nil && p != logs && d.Name() != logfile.LockFile {
			left = append(left, p)
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("%d files and directories are left in the log dir, e.g. %v", len(left), left[:min(5, len(left))])
	}
}
