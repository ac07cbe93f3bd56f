package logfile

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fast-sandbox/fast-sandbox/pkg/cgroup"
)

func TestRecordRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 26, 23, 4, 5, 123456789, time.UTC)
	for _, l := range []Line{
		{Time: at, Stream: Stdout, Text: []byte("hello world")},
		{Time: at, Stream: Stderr, Partial: true, Text: []byte("part")},
		{Time: at, Stream: Stdout, Text: []byte("")},
	} {
		rec := appendRecord(nil, l)
		got, err := ParseLine(rec[:len(rec)-1])
		if err != nil {
			t.Fatalf("parse %q: %v", rec, err)
		}
		if !got.Time.Equal(l.Time) || got.Stream != l.Stream || got.Partial != l.Partial || string(got.Text) != string(l.Text) {
			t.Errorf("round trip of %+v gave %+v", l, got)
		}
	}
	if got := string(appendRecord(nil, Line{Time: at, Stream: Stdout, Text: []byte("x")})); got != "2026-11-26T23:04:05.123456789Z stdout F x\n" {
		t.Errorf("record = %q", got)
	}
	for _, bad := range []string{"", "nonsense", "2026-11-26T23:04:05Z stdout X text", "yesterday stdout F text"} {
		if _, err := ParseLine([]byte(bad)); err == nil {
			t.Errorf("ParseLine(%q) accepted it", bad)
		}
	}
}

func TestCopySplitsLongLinesAndKeepsTheLast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.log")
	w, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", MaxLineSize+10)
	if err := w.Copy(Stdout, strings.NewReader("one\n"+long+"\nlast without newline")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	raw, _ := os.ReadFile(path)
	if n := strings.Count(string(raw), " stdout P "); n != 1 {
		t.Errorf("%d partial records, want 1", n)
	}
	got := readAll(t, path)
	want := []string{"one", long, "last without newline"}
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d = %.40q..., want %.40q...", i, got[i], want[i])
		}
	}
}

func TestRotationKeepsNewestFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.log")
	w, err := Create(path, WithRotation(200, 3))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		if err := w.Write(Stdout, false, fmt.Appendf(nil, "line-%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	for _, p := range []string{path, path + ".1", path + ".2"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if fi.Size() > 200 {
			t.Errorf("%s holds %d bytes, past the 200 limit", p, fi.Size())
		}
	}
	if _, err := os.Stat(path + ".3"); !os.IsNotExist(err) {
		t.Errorf("a fourth file was kept: %v", err)
	}
	got := readAll(t, path)
	if got[len(got)-1] != "line-39" {
		t.Errorf("newest line = %q, want line-39", got[len(got)-1])
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Errorf("lines out of order across rotated files: %q then %q", got[i-1], got[i])
		}
	}
}

func TestStreamTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.log")
	w, _ := Create(path)
	for i := range 10 {
		w.Write(Stderr, false, fmt.Appendf(nil, "l%d", i))
	}
	w.Close()
	var got []string
	err := Stream(context.Background(), path, StreamOptions{Tail: 3}, func(ls []Line) error {
		for _, l := range ls {
			got = append(got, l.Stream+":"+string(l.Text))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "stderr:l7,stderr:l8,stderr:l9" {
		t.Errorf("tail 3 = %v", got)
	}
}

func TestStreamFollowsAcrossRotationUntilDone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.log")
	w, err := Create(path, WithRotation(120, 2))
	if err != nil {
		t.Fatal(err)
	}
	var done atomic.Bool
	go func() {
		for i := range 20 {
			w.Write(Stdout, false, fmt.Appendf(nil, "line-%02d", i))
			time.Sleep(5 * time.Millisecond)
		}
		w.Close()
		done.Store(true)
	}()
	var got []string
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = Stream(ctx, path, StreamOptions{Follow: true, Done: done.Load}, func(ls []Line) error {
		for _, l := range ls {
			got = append(got, string(l.Text))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A follower may miss whole files rotated away between two polls, but it
	// never repeats or reorders lines, and it reads to the end.
	if len(got) == 0 || got[len(got)-1] != "line-19" {
		t.Fatalf("followed %v, want it to end with line-19", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Errorf("out of order or repeated: %q then %q", got[i-1], got[i])
		}
	}
}

func TestDriverConfigRoundTrip(t *testing.T) {
	in := DriverConfig{Path: "/var/log/fsb/default/a b/x-1.log", MaxSize: 1 << 20, MaxFiles: 4,
		Cgroup: "/fsb/x-1", Limits: cgroup.Limits{CPUQuota: 10000, CPUPeriod: 100000, Memory: 64 << 20}}
	out, err := ParseDriverConfig(in.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Errorf("round trip gave %+v, want %+v", out, in)
	}
	for _, bad := range []string{"", "max-size=1", "path=/x&max-size=big", "path=/x&max-files=many", "path=/x&cgroup=/a&memory=lots"} {
		if _, err := ParseDriverConfig(bad); err == nil {
			t.Errorf("ParseDriverConfig(%q) accepted it", bad)
		}
	}
}

func readAll(t *testing.T, path string) []string {
	t.Helper()
	var out []string
	err := Stream(context.Background(), path, StreamOptions{}, func(ls []Line) error {
		for _, l := range ls {
			out = append(out, string(l.Text))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
