package e2b

import (
	"strings"
	"testing"
)

func TestParseKeys(t *testing.T) {
	k, err := ParseKeys(strings.NewReader(`
# team a
e2b_0123abcd  team-a
e2b_ffff team-b   # trailing comment

e2b_AAAA team-a
`))
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"e2b_0123abcd": "team-a", "e2b_ffff": "team-b", "e2b_AAAA": "team-a"} {
		if ns, ok := k.Namespace(key); !ok || ns != want {
			t.Errorf("Namespace(%s) = %q, %v; want %q", key, ns, ok, want)
		}
	}
	for _, bad := range []string{"", "e2b_0123abce", "e2b_", "0123abcd", "e2b_0123abcd "} {
		if ns, ok := k.Namespace(bad); ok {
			t.Errorf("Namespace(%q) = %q, want no namespace", bad, ns)
		}
	}
	if got := strings.Join(k.Namespaces(), ","); got != "team-a,team-b" {
		t.Errorf("Namespaces() = %s, want team-a,team-b", got)
	}
}

func TestParseKeysRefuses(t *testing.T) {
	for name, tc := range map[string]struct{ file, want string }{
		"empty":         {"# nothing\n\n", "no key"},
		"no namespace":  {"e2b_00\n", "line 1"},
		"three fields":  {"e2b_00 a b\n", "line 1"},
		"not hex":       {"\ne2b_xyz a\n", "line 2: the key is not of the form"},
		"no prefix":     {"abcd a\n", "not of the form"},
		"bad namespace": {"e2b_00 Not_A_Namespace\n", "namespace"},
		"duplicate":     {"e2b_00 a\ne2b_00 b\n", "line 2: the key is listed twice"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseKeys(strings.NewReader(tc.file))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseKeys: %v, want an error with %q", err, tc.want)
			}
			if key := strings.Fields(tc.file)[0]; !strings.HasPrefix(key, "#") && strings.Contains(err.Error(), key) {
				t.Errorf("the error %q shows the key %s", err, key)
			}
		})
	}
}

func TestNilKeysHoldNothing(t *testing.T) {
	var k *Keys
	if _, ok := k.Namespace("e2b_00"); ok {
		t.Error("nil Keys accepted a key")
	}
}
