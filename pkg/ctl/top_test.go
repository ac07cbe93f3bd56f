package ctl

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

func TestTop(t *testing.T) {
	disk := uint64(8 << 20)
	at := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	f := newFake()
	f.usage = &fsbv1.SandboxUsage{
		Time: timestamppb.New(at), Revision: 2, CpuUsedNanos: 3e9, CpuPercent: 47.06, CpuCount: 2, CpuWindowMillis: 203,
		MemoryUsedBytes: 1468006, MemoryCacheBytes: 48 << 20, MemoryLimitBytes: 256 << 20, NodeMemoryBytes: 8 << 30,
		DiskUsedBytes: &disk,
	}
	f.add("default", "demo", "busybox", time.Minute)
	c, out, _ := client(t, serve(t, f), testToken, "")
	if err := c.Top(context.Background(), "demo", ""); err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"NAME", "CPU", "CORES", "MEMORY", "LIMIT", "CACHE", "DISK"},
		{"demo", "47.1%", "2", "1.4Mi", "256Mi", "48Mi", "8Mi"},
	}
	if got := fields(out.String()); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("table:\n%s\nwant %q", out, want)
	}

	out.buf.Reset()
	if err := c.Top(context.Background(), "demo", OutputJSON); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out.String()), &got); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	for k, v := range map[string]any{
		"name": "demo", "namespace": "default", "revision": 2.0, "time": "2026-12-03T08:00:00Z", "cpuPercent": 47.06,
		"cpuCount": 2.0, "cpuWindowMillis": 203.0, "cpuUsedNanos": 3e9, "memoryUsedBytes": 1468006.0,
		"memoryLimitBytes": float64(256 << 20), "memoryCacheBytes": float64(48 << 20), "nodeMemoryBytes": float64(8 << 30),
		"diskUsedBytes": float64(8 << 20),
	} {
		if got[k] != v {
			t.Errorf("JSON %s = %v, want %v", k, got[k], v)
		}
	}

	// No limit, disk unknown.
	f.usage.MemoryLimitBytes, f.usage.DiskUsedBytes = 0, nil
	out.buf.Reset()
	if err := c.Top(context.Background(), "demo", ""); err != nil {
		t.Fatal(err)
	}
	if row := fields(out.String())[1]; row[4] != "none" || row[6] != "<unknown>" {
		t.Errorf("row %q: want LIMIT none and DISK <unknown>", row)
	}
	out.buf.Reset()
	if err := c.Top(context.Background(), "demo", OutputJSON); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(out.String()), &got); err != nil || got["diskUsedBytes"] != nil || got["memoryLimitBytes"] != 0.0 {
		t.Errorf("JSON without limit and disk: %v\n%s", err, out)
	}

	if err := c.Top(context.Background(), "ghost", ""); err == nil || err.Error() != "sandbox ghost not found in namespace default" {
		t.Errorf("missing sandbox: %v", err)
	}
	if err := c.Top(context.Background(), "demo", "yaml"); !IsUsage(err) {
		t.Errorf("-o yaml: %v, want a usage error", err)
	}
}

func TestBytesString(t *testing.T) {
	for n, want := range map[uint64]string{
		0: "0", 1023: "1023", 1024: "1Ki", 1536: "1.5Ki", 28672: "28Ki", 1468006: "1.4Mi",
		256 << 20: "256Mi", 25275990016: "24Gi", 3 << 40: "3Ti",
	} {
		if got := bytesString(n); got != want {
			t.Errorf("bytesString(%d) = %q, want %q", n, got, want)
		}
	}
}
