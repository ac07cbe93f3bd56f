package agent

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

// TestValidatePool: --pool is empty (the default pool) or a name a
// SandboxPool can have; anything else stops the agent with a message that
// names the flag and the rule.
func TestValidatePool(t *testing.T) {
	for _, tc := range []struct {
		pool string
		ok   bool
	}{
		{"", true},
		{"p1", true},
		{"gpu-pool", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{"GPU", false},
		{"-p", false},
		{"p-", false},
		{"a.b", false},
		{"a_b", false},
		{"team/p1", false},
		{" p1", false},
	} {
		err := ValidatePool(tc.pool)
		if tc.ok != (err == nil) {
			t.Errorf("ValidatePool(%q) = %v, want ok=%v", tc.pool, err, tc.ok)
			continue
		}
		if err != nil && (!strings.Contains(err.Error(), "--pool") || !strings.Contains(err.Error(), "DNS-1123")) {
			t.Errorf("ValidatePool(%q) = %q: want the flag and the rule named", tc.pool, err)
		}
	}
}

// TestParseRuntimes: --runtimes takes known names once each; empty means
// every installed runtime.
func TestParseRuntimes(t *testing.T) {
	for _, tc := range []struct {
		list string
		want []string
		err  string
	}{
		{list: "", want: nil},
		{list: "  ", want: nil},
		{list: "runc", want: []string{"runc"}},
		{list: "runc,crun", want: []string{"runc", "crun"}},
		{list: "runc, crun", want: []string{"runc", "crun"}},
		{list: "gvisor", want: []string{"gvisor"}},
		{list: "runsc", err: `"runsc" is not a runtime`},
		{list: "runc,", err: `"" is not a runtime`},
		{list: "kata", err: "want a comma-separated list of runc, crun, gvisor"},
		{list: "runc,runc", err: "runc is listed twice"},
	} {
		got, err := ParseRuntimes(tc.list)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseRuntimes(%q) = %v, %v: want an error saying %q", tc.list, got, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseRuntimes(%q) = %v, %v: want %v", tc.list, got, err, tc.want)
		}
	}
}

// TestSelectRuntimes: the agent offers the wanted runtimes among the
// installed ones, and refuses to start when a list is given and none of it
// is installed.
func TestSelectRuntimes(t *testing.T) {
	all := map[string]string{"runc": "runc", "crun": "crun", "gvisor": "/run/fsb/runsc-fsb"}
	runcOnly := map[string]string{"runc": "runc"}
	for _, tc := range []struct {
		name      string
		installed map[string]string
		wanted    []string
		want      []string
		err       string
	}{
		{name: "no list offers all", installed: all, want: []string{"crun", "gvisor", "runc"}},
		{name: "no list, nothing installed, is the runtime's default", installed: map[string]string{}, want: []string{}},
		{name: "container pool", installed: all, wanted: []string{"runc", "crun"}, want: []string{"crun", "runc"}},
		{name: "gvisor pool", installed: all, wanted: []string{"gvisor"}, want: []string{"gvisor"}},
		{name: "some missing", installed: runcOnly, wanted: []string{"runc", "crun"}, want: []string{"runc"}},
		{name: "none installed", installed: runcOnly, wanted: []string{"gvisor"}, err: "--runtimes gvisor: none of them is installed on this node (installed: runc)"},
		{name: "nothing at all", installed: map[string]string{}, wanted: []string{"crun"}, err: "(installed: none)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SelectRuntimes(tc.installed, tc.wanted)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("SelectRuntimes = %v, %v: want an error saying %q", got, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if names := slices.Sorted(maps.Keys(got)); !slices.Equal(names, tc.want) {
				t.Errorf("offers %v, want %v", names, tc.want)
			}
			for name, binary := range got {
				if binary != tc.installed[name] {
					t.Errorf("%s runs %q, want the installed %q", name, binary, tc.installed[name])
				}
			}
		})
	}
}
