package agent

import (
	"testing"
	"time"

	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

func TestCPUPercent(t *testing.T) {
	t0 := time.Unix(1000, 0)
	reading := func(after time.Duration, nanos uint64) runtime.TaskUsage {
		return runtime.TaskUsage{Time: t0.Add(after), CPUNanos: nanos}
	}
	cases := []struct {
		name          string
		first, second runtime.TaskUsage
		cores         int
		want          float64
	}{
		{"one busy core of one", reading(0, 0), reading(200*time.Millisecond, 200_000_000), 1, 100},
		{"one busy core of two", reading(0, 1e9), reading(200*time.Millisecond, 1e9+200_000_000), 2, 50},
		{"idle", reading(0, 5e9), reading(time.Second, 5e9), 4, 0},
		{"a quarter", reading(0, 0), reading(time.Second, 250_000_000), 1, 25},
		{"ticks over the window are capped", reading(0, 0), reading(100*time.Millisecond, 110_000_000), 1, 100},
		{"no time between readings", reading(0, 0), reading(0, 1e6), 1, 0},
		{"a counter that went back (new task)", reading(0, 9e9), reading(time.Second, 1e9), 1, 0},
	}
	for _, tc := range cases {
		if got := cpuPercent(tc.first, tc.second, tc.cores); got != tc.want {
			t.Errorf("%s: got %v%%, want %v%%", tc.name, got, tc.want)
		}
	}
}

func TestCoresAndMemoryLimitOf(t *testing.T) {
	for cpu, want := range map[string]int{"": 8, "500m": 1, "1": 1, "1001m": 2, "2": 2, "2.5": 3, "bogus": 8} {
		if got := coresOf(cpu, 8); got != want {
			t.Errorf("coresOf(%q, 8) = %d, want %d", cpu, got, want)
		}
	}
	for mem, want := range map[string]uint64{"": 0, "64Mi": 64 << 20, "1G": 1e9, "bogus": 0} {
		if got := memoryLimitOf(mem); got != want {
			t.Errorf("memoryLimitOf(%q) = %d, want %d", mem, got, want)
		}
	}
	if nodeMemory() == 0 {
		t.Error("nodeMemory: 0 on Linux")
	}
}
