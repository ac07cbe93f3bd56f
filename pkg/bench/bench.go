// Package bench measures sandbox latencies the way DESIGN §8 fixes: the
// clock starts at the request and stops at the first byte of output in a
// file on the host, and every figure stands beside a baseline of raw
// containerd doing the same work in the same run.
package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Summary holds percentiles of a set of durations.
type Summary struct {
	N                  int
	P50, P90, P99, Max time.Duration
}

// Summarize returns the percentiles of ds (nearest rank).
func Summarize(ds []time.Duration) Summary {
	if len(ds) == 0 {
		return Summary{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(float64(len(s))*p+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return Summary{N: len(s), P50: rank(.50), P90: rank(.90), P99: rank(.99), Max: s[len(s)-1]}
}

// Millis renders d in milliseconds with two decimals.
func Millis(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}

// WaitForOutput waits until the file at path holds at least one byte and
// returns when that was seen (awaitFile: inotify, no poll).
func WaitForOutput(ctx context.Context, path string) (time.Time, error) {
	seen, err := awaitFile(ctx, filepath.Dir(path), func() (bool, error) {
		fi, err := os.Stat(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return false, err
		}
		return err == nil && fi.Size() > 0, nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("wait for output in %s: %w", path, err)
	}
	return seen, nil
}
