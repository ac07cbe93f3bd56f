package auth

import (
	"fmt"
	"testing"
	"time"
)

// clock is a settable time for the caches' expiry.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestCacheExpires(t *testing.T) {
	clk := &clock{t: time.Unix(1000, 0)}
	c := newCache[string](8, clk.now)
	c.put("pos", "user-a", 10*time.Second)
	c.put("neg", "refused", 2*time.Second)
	for _, tc := range []struct {
		after   time.Duration
		pos, ok bool // whether "pos" and "neg" are still there
	}{
		{0, true, true},
		{1999 * time.Millisecond, true, true},
		{2 * time.Second, true, false},
		{9999 * time.Millisecond, true, false},
		{10 * time.Second, false, false},
	} {
		clk.t = time.Unix(1000, 0).Add(tc.after)
		if _, got := c.get("pos"); got != tc.pos {
			t.Errorf("after %v: positive entry present = %v, want %v", tc.after, got, tc.pos)
		}
		if _, got := c.get("neg"); got != tc.ok {
			t.Errorf("after %v: negative entry present = %v, want %v", tc.after, got, tc.ok)
		}
	}
	if n := c.len(); n != 0 {
		t.Errorf("expired entries are kept: %d left", n)
	}
}

func TestCacheIsBounded(t *testing.T) {
	clk := &clock{t: time.Unix(1000, 0)}
	const size = 16
	c := newCache[int](size, clk.now)
	for i := range 10 * size {
		c.put(fmt.Sprint(i), i, time.Minute)
		if n := c.len(); n > size {
			t.Fatalf("after %d puts the cache holds %d entries, over its bound %d", i+1, n, size)
		}
	}
	// The newest stay, the oldest went.
	for _, tc := range []struct {
		key  int
		want bool
	}{{0, false}, {10*size - size - 1, false}, {10*size - size, true}, {10*size - 1, true}} {
		if v, ok := c.get(fmt.Sprint(tc.key)); ok != tc.want || (ok && v != tc.key) {
			t.Errorf("get(%d) = %d, %v; want present %v", tc.key, v, ok, tc.want)
		}
	}
	// Putting a key again replaces it: it neither grows the cache nor
	// keeps its old expiry.
	c.put("again", 1, time.Second)
	c.put("again", 2, time.Hour)
	clk.t = clk.t.Add(time.Minute)
	if v, ok := c.get("again"); !ok || v != 2 {
		t.Errorf("a replaced entry: get = %d, %v; want 2, true", v, ok)
	}
	if n := c.len(); n > size {
		t.Errorf("the cache holds %d entries, over its bound %d", n, size)
	}
}
