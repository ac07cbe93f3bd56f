package strictjson

import (
	"strings"
	"testing"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// TestUnmarshal: known fields decode as Connect's codec decodes them; an
// unknown field, an unknown enum name or an empty payload is an error
// naming what is wrong.
func TestUnmarshal(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string // want "" means decoded
	}{
		{"known fields", `{"name":"a","spec":{"image":"busybox","exposedPorts":[80],"failurePolicy":"FAILURE_POLICY_MANUAL"}}`, ""},
		{"snake_case names", `{"name":"a","spec":{"exposed_ports":[80]}}`, ""},
		{"unknown field", `{"name":"a","spec":{"exposedPort":[80]}}`, `unknown field "exposedPort"`},
		{"unknown enum name", `{"spec":{"failurePolicy":"RETRY"}}`, `"RETRY"`},
		{"empty", ``, "zero-length payload"},
		{"not JSON", `{"name":`, "fsb.v1.CreateSandboxRequest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var req fsbv1.CreateSandboxRequest
			err := New(Name).Unmarshal([]byte(tc.in), &req)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Unmarshal: %v, want it decoded", err)
			case tc.want == "" && req.GetSpec().GetExposedPorts()[0] != 80:
				t.Errorf("decoded %v, want port 80", &req)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Unmarshal: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// TestMarshalStable: the same message gives the same compact bytes, which
// decode back.
func TestMarshalStable(t *testing.T) {
	c := New(NameCharsetUTF8)
	msg := &fsbv1.GetSandboxRequest{Name: "a", Namespace: "b"}
	a, err := c.MarshalStable(msg)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := c.MarshalStable(msg)
	if string(a) != string(b) || strings.ContainsAny(string(a), " \n") {
		t.Errorf("MarshalStable gave %q then %q, want the same compact bytes", a, b)
	}
	var back fsbv1.GetSandboxRequest
	if err := c.Unmarshal(a, &back); err != nil || back.GetName() != "a" || back.GetNamespace() != "b" {
		t.Errorf("round trip: %v, %v", &back, err)
	}
	if _, err := c.Marshal("not a message"); err == nil {
		t.Error("Marshal of a string: no error")
	}
}
