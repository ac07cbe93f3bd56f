package fence

import (
	"errors"
	"net/http"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		header string
		want   int64
		bad    bool
	}{
		{"", 0, false},
		{"0", 0, false},
		{"1883449142018049", 1883449142018049, false},
		{"-1", 0, true},
		{"x", 0, true},
	} {
		h := http.Header{}
		if tc.header != "" {
			h.Set(Header, tc.header)
		}
		got, err := Parse(h)
		if got != tc.want || (err != nil) != tc.bad {
			t.Errorf("Parse(%q) = %d, %v; want %d, error %v", tc.header, got, err, tc.want, tc.bad)
		}
	}
	h := http.Header{}
	Set(h, 0)
	if _, ok := h[Header]; ok {
		t.Error("Set(0) wrote a header: no header is fence 0")
	}
}

// TestGuard: equal and higher fences pass and raise, lower ones are
// refused naming both, Check raises nothing, and raised sees each new
// highest once.
func TestGuard(t *testing.T) {
	var raised []int64
	g := NewGuard(2, func(n int64) { raised = append(raised, n) })
	for _, step := range []struct {
		n       int64
		refused string
	}{
		{2, ""}, {1, "fenced: a newer controller leads (fence 1 < 2)"}, {0, "fenced: a newer controller leads (fence 0 < 2)"},
		{5, ""}, {5, ""}, {4, "fenced: a newer controller leads (fence 4 < 5)"},
	} {
		err := g.Observe(step.n)
		if step.refused == "" && err != nil || step.refused != "" && (err == nil || err.Error() != step.refused || !errors.Is(err, ErrFenced)) {
			t.Errorf("Observe(%d) = %v, want %q", step.n, err, step.refused)
		}
	}
	if err := g.Check(6); err != nil || g.Highest() != 5 {
		t.Errorf("Check(6) = %v and raised the highest to %d; want nil and 5", err, g.Highest())
	}
	if len(raised) != 1 || raised[0] != 5 {
		t.Errorf("raised with %v, want [5]", raised)
	}
}
