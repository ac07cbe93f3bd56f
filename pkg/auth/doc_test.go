package auth

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// TestSecurityDocMatchesPolicy reads the roles × RPCs table of
// docs/security.md and checks it says what the policies do, so the two
// never drift apart.
func TestSecurityDocMatchesPolicy(t *testing.T) {
	b, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]Role{}
	for _, p := range []Policy{FastPathPolicy, AgentPolicy} {
		for proc, roles := range p {
			want[proc] = roles
		}
	}
	var columns []Role
	got := map[string][]Role{}
	for _, line := range strings.Split(string(b), "\n") {
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		switch {
		case len(cells) > 1 && cells[0] == "RPC":
			columns = nil
			for _, c := range cells[1:] {
				columns = append(columns, Role(c))
			}
		case columns != nil && strings.HasPrefix(cells[0], "`"):
			// An RPC is named without its package; a plain HTTP
			// route (/files) as it is.
			proc := strings.Trim(cells[0], "`")
			if !strings.HasPrefix(proc, "/") {
				proc = "/fsb.v1." + proc
			}
			if _, dup := got[proc]; dup {
				t.Errorf("%s has two lines", proc)
			}
			got[proc] = []Role{}
			for i, c := range cells[1:] {
				if i < len(columns) && c == "✓" {
					got[proc] = append(got[proc], columns[i])
				}
			}
		case columns != nil && len(got) > 0 && !strings.HasPrefix(line, "|"):
			columns = nil // the table ended
		}
	}
	if len(got) == 0 {
		t.Fatal("docs/security.md has no roles × RPCs table (a header row starting with | RPC |)")
	}
	for proc, roles := range want {
		doc, ok := got[proc]
		if !ok {
			t.Errorf("docs/security.md does not list %s (policy: %v)", proc, roles)
			continue
		}
		if !slices.Equal(sorted(doc), sorted(roles)) {
			t.Errorf("%s: docs/security.md says %v, the policy %v", proc, doc, roles)
		}
	}
	for proc := range got {
		if _, ok := want[proc]; !ok {
			t.Errorf("docs/security.md lists %s, which no policy names", proc)
		}
	}
}

func sorted(rs []Role) []Role {
	rs = slices.Clone(rs)
	slices.Sort(rs)
	return rs
}
