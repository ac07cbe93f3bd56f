package controller

import (
	"testing"
	"time"
)

func TestBackoffDoublesToItsCapAndResets(t *testing.T) {
	b := newBackoff(time.Second, 30*time.Second)
	var got []time.Duration
	for range 7 {
		got = append(got, b.failed("k"))
	}
	want := []time.Duration{1, 2, 4, 8, 16, 30, 30}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("wait %d = %s, want %s (all: %v)", i, got[i], want[i]*time.Second, got)
		}
	}
	if w := b.wait("k"); w <= 25*time.Second || w > 30*time.Second {
		t.Errorf("wait after a failure = %s, want about 30s", w)
	}
	if w := b.wait("other"); w != 0 {
		t.Errorf("a key that never failed waits %s", w)
	}
	b.reset("k")
	if w := b.next("k"); w != time.Second {
		t.Errorf("after reset the next wait is %s, want 1s", w)
	}
}
