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

// TestSecurityDocMatchesKubeAccess reads the Kubernetes mapping table of
// docs/security.md (call | verb | resource | scope) and checks it against
// KubeAccess.
func TestSecurityDocMatchesKubeAccess(t *testing.T) {
	b, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Access{}
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		switch {
		case len(cells) == 4 && cells[0] == "call" && cells[1] == "verb":
			in = true
		case in && !strings.HasPrefix(line, "|"):
			in = false
		case in && strings.HasPrefix(cells[0], "`") && len(cells) == 4:
			proc := strings.Trim(cells[0], "`")
			if !strings.HasPrefix(proc, "/") {
				proc = "/fsb.v1." + proc
			}
			res, sub, _ := strings.Cut(cells[2], "/")
			got[proc] = Access{Verb: cells[1], Resource: res, Subresource: sub,
				Cluster: cells[3] == "cluster", EmptyIsAll: strings.Contains(cells[3], "all")}
		}
	}
	if len(got) == 0 {
		t.Fatal("docs/security.md has no Kubernetes mapping table (a header row | call | verb | resource | scope |)")
	}
	for proc, want := range KubeAccess {
		if doc, ok := got[proc]; !ok {
			t.Errorf("docs/security.md does not map %s (KubeAccess: %+v)", proc, want)
		} else if doc != want {
			t.Errorf("%s: docs/security.md says %+v, KubeAccess %+v", proc, doc, want)
		}
	}
	for proc := range got {
		if _, ok := KubeAccess[proc]; !ok {
			t.Errorf("docs/security.md maps %s, which KubeAccess does not", proc)
		}
	}
}
