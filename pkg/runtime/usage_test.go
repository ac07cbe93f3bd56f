package runtime

import (
	"testing"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/typeurl/v2"
)

// TestTaskUsageOf converts cgroup stats as a shim sends them, through
// typeurl as TaskUsage receives them, for both cgroup versions.
func TestTaskUsageOf(t *testing.T) {
	const mib = 1 << 20
	cases := []struct {
		name  string
		stats any
		want  TaskUsage
	}{{
		name: "v1: usage minus total_inactive_file, total_cache",
		stats: &v1.Metrics{
			CPU: &v1.CPUStat{Usage: &v1.CPUUsage{Total: 1_500_000_000}},
			Memory: &v1.MemoryStat{
				Usage:             &v1.MemoryEntry{Usage: 100 * mib},
				TotalInactiveFile: 30 * mib, InactiveFile: 10 * mib,
				TotalCache: 40 * mib, Cache: 20 * mib,
			},
		},
		want: TaskUsage{CPUNanos: 1_500_000_000, MemoryUsed: 70 * mib, MemoryCache: 40 * mib},
	}, {
		name: "v1: without the total_ counters, the cgroup's own",
		stats: &v1.Metrics{
			Memory: &v1.MemoryStat{Usage: &v1.MemoryEntry{Usage: 100 * mib}, InactiveFile: 10 * mib, Cache: 20 * mib},
		},
		want: TaskUsage{MemoryUsed: 90 * mib, MemoryCache: 20 * mib},
	}, {
		name: "v1: inactive above usage (read apart) floors at 0",
		stats: &v1.Metrics{
			Memory: &v1.MemoryStat{Usage: &v1.MemoryEntry{Usage: 5 * mib}, TotalInactiveFile: 6 * mib},
		},
		want: TaskUsage{},
	}, {
		name: "v2: memory.current minus inactive_file, file as cache, usec to ns",
		stats: &v2.Metrics{
			CPU:    &v2.CPUStat{UsageUsec: 2_000_000},
			Memory: &v2.MemoryStat{Usage: 64 * mib, InactiveFile: 4 * mib, File: 12 * mib},
		},
		want: TaskUsage{CPUNanos: 2_000_000_000, MemoryUsed: 60 * mib, MemoryCache: 12 * mib},
	}, {
		name:  "v2: empty stats",
		stats: &v2.Metrics{},
		want:  TaskUsage{},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// As the shim sends them: an Any that typeurl decodes.
			a, err := typeurl.MarshalAnyToProto(tc.stats)
			if err != nil {
				t.Fatal(err)
			}
			decoded, err := typeurl.UnmarshalAny(a)
			if err != nil {
				t.Fatalf("decode %s: %v", a.GetTypeUrl(), err)
			}
			got, err := taskUsageOf(decoded)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	if _, err := taskUsageOf(&v1.CPUStat{}); err == nil {
		t.Error("stats of another type: no error")
	}
}
