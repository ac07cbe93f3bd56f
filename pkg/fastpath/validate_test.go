package fastpath

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// edgeOnly serves a fast path with nothing behind it: what validation
// refuses never reaches the store, the registry or an agent, so a request
// that gets further fails the test with another code.
func edgeOnly(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	fp := New(ctx, Config{Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { cancel(); fp.Wait() })
	mux := http.NewServeMux()
	mux.Handle(fp.Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// connectJSON posts body as Connect JSON to procedure and returns the
// answer's code ("" for success) and message.
func connectJSON(t *testing.T, url, procedure, body string) (code, message string) {
	t.Helper()
	resp, err := http.Post(url+procedure, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", procedure, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read answer of %s: %v", procedure, err)
	}
	if resp.StatusCode == http.StatusOK {
		return "", ""
	}
	var e struct{ Code, Message string }
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("%s: HTTP %d, body %.200q is no Connect error: %v", procedure, resp.StatusCode, b, err)
	}
	return e.Code, e.Message
}

// hostileSpec is one bad spec of issue 9's list and the words its answer
// must hold: the field and the limit.
type hostileSpec struct {
	name string
	spec string // the JSON of spec's fields, image included
	want []string
}

// hostileSpecs are the spec values a user tried that were accepted, or
// failed in runc as internal errors.
func hostileSpecs() []hostileSpec {
	ports := make([]string, 1000)
	for i := range ports {
		ports[i] = fmt.Sprint(1000 + i)
	}
	img := `"image":"` + rig.ImageRef + `",`
	return []hostileSpec{
		{"env value with NUL", img + `"envs":[{"name":"A","value":"x\u0000y"}]`, []string{"spec.envs[0]", "NUL"}},
		{"env name with a space", img + `"envs":[{"name":"A B","value":"x"}]`, []string{"spec.envs", `"A B"`, "letters, digits and '_'"}},
		{"cpu 1e12", img + `"resources":{"cpu":"1e12"}`, []string{"spec.resources.cpu", "at most 256 cores"}},
		{"memory 1Ki", img + `"resources":{"memory":"1Ki"}`, []string{"spec.resources.memory", "at least 8Mi"}},
		{"memory 1000Ei", img + `"resources":{"memory":"1000Ei"}`, []string{"spec.resources.memory", "at most 1Ti"}},
		{"pids 2^63-1", img + `"resources":{"pids":"9223372036854775807"}`, []string{"spec.resources.pids", "4194304"}},
		{"1000 ports", img + `"exposedPorts":[` + strings.Join(ports, ",") + `]`, []string{"spec.exposedPorts", "1000 ports, at most 64"}},
		{"consistency mode 99", img + `"consistencyMode":99`, []string{"spec.consistencyMode 99", "CONSISTENCY_MODE_FAST or CONSISTENCY_MODE_STRONG"}},
		{"failure policy 99", img + `"failurePolicy":99`, []string{"spec.failurePolicy 99", "FAILURE_POLICY_MANUAL or FAILURE_POLICY_AUTO_RECREATE"}},
		{"NUL in an argument", img + `"command":["sh"],"args":["-c","a\u0000b"]`, []string{"spec.args[1]", "NUL"}},
		{"command and args past 128 KiB", img + `"command":["` + strings.Repeat("a", 100<<10) + `"],"args":["` + strings.Repeat("b", 40<<10) + `"]`, []string{"spec.command and spec.args", "at most 131072"}},
		{"2000 envs", img + `"envs":[` + strings.TrimSuffix(strings.Repeat(`{"name":"A","value":"1"},`, 2000), ",") + `]`, []string{"spec.envs", "2000 entries, at most 1024"}},
		{"5 MiB working dir", img + `"workingDir":"/` + strings.Repeat("a", 5<<20) + `"`, []string{"spec.workingDir", "at most 4096"}},
		{"image past 1 KiB", `"image":"` + strings.Repeat("a", 2000) + `"`, []string{"spec.image", "at most 1024"}},
	}
}

// TestHostileSpecsRefused: every bad value of issue 9 sent as Connect JSON
// to the fast path is InvalidArgument, naming the field and the limit.
func TestHostileSpecsRefused(t *testing.T) {
	url := edgeOnly(t)
	for _, tc := range hostileSpecs() {
		t.Run(tc.name, func(t *testing.T) {
			body := `{"name":"hostile","spec":{` + tc.spec + `}}`
			code, msg := connectJSON(t, url, fsbv1connect.FastPathServiceCreateSandboxProcedure, body)
			if code != "invalid_argument" {
				t.Fatalf("code %q (%.300s), want invalid_argument", code, msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %.300q does not say %q", msg, w)
				}
			}
			if len(msg) > 1024 {
				t.Errorf("message is %d bytes: a hostile value must not be echoed whole", len(msg))
			}
		})
	}
}

// TestUnknownJSONFieldRefused: a JSON request with a field the API does
// not have (a typo that would drop a port or a limit) is InvalidArgument
// naming it, for every content type Connect takes JSON as; the same
// request without the typo is decoded (and refused by validation only).
func TestUnknownJSONFieldRefused(t *testing.T) {
	url := edgeOnly(t)
	spec := `"image":"` + rig.ImageRef + `","runtime":"kata"`
	for _, tc := range []struct {
		name, contentType, body, want string
	}{
		{"exposedPort in the spec", "application/json", `{"name":"typo","spec":{` + spec + `,"exposedPort":[80]}}`, `unknown field "exposedPort"`},
		{"charset", "application/json; charset=utf-8", `{"name":"typo","spec":{` + spec + `,"exposedPort":[80]}}`, `unknown field "exposedPort"`},
		{"top level", "application/json", `{"name":"typo","nmespace":"x","spec":{` + spec + `}}`, `unknown field "nmespace"`},
		{"in resources", "application/json", `{"name":"typo","spec":{` + spec + `,"resources":{"memroy":"1Gi"}}}`, `unknown field "memroy"`},
		{"enum by an unknown name", "application/json", `{"name":"typo","spec":{` + spec + `,"failurePolicy":"RETRY"}}`, "RETRY"},
		{"known fields only", "application/json", `{"name":"typo","labels":{"a":"b"},"spec":{` + spec + `,"exposedPorts":[80]}}`, `spec.runtime "kata"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Post(url+fsbv1connect.FastPathServiceCreateSandboxProcedure, tc.contentType, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e struct{ Code, Message string }
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
				t.Fatalf("HTTP %d: no Connect error: %v", resp.StatusCode, err)
			}
			if e.Code != "invalid_argument" || !strings.Contains(e.Message, tc.want) {
				t.Errorf("answer %s: %q, want invalid_argument saying %q", e.Code, e.Message, tc.want)
			}
		})
	}
}

// TestEveryRPCValidatesNames: every RPC that names a sandbox checks its
// name and namespace as create does, before it looks anything up.
func TestEveryRPCValidatesNames(t *testing.T) {
	c := fsbv1connect.NewFastPathServiceClient(http.DefaultClient, edgeOnly(t))
	ctx := context.Background()
	logs := func(msg *fsbv1.StreamLogsRequest) error {
		s, err := c.StreamLogs(ctx, connect.NewRequest(msg))
		if err != nil {
			return err
		}
		defer s.Close()
		for s.Receive() {
		}
		return s.Err()
	}
	for _, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"GetSandbox {}", func() error { _, err := c.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{})); return err }, "name is required"},
		{"GetSandbox bad namespace", func() error {
			_, err := c.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: "a", Namespace: "Bad_NS"}))
			return err
		}, `namespace "Bad_NS"`},
		{"GetSandbox bad name", func() error {
			_, err := c.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: "../etc"}))
			return err
		}, `name "../etc"`},
		{"DeleteSandbox {}", func() error {
			_, err := c.DeleteSandbox(ctx, connect.NewRequest(&fsbv1.DeleteSandboxRequest{}))
			return err
		}, "name is required"},
		{"DeleteSandbox bad namespace", func() error {
			_, err := c.DeleteSandbox(ctx, connect.NewRequest(&fsbv1.DeleteSandboxRequest{Name: "a", Namespace: "a/b"}))
			return err
		}, `namespace "a/b"`},
		{"UpdateSandbox {}", func() error {
			_, err := c.UpdateSandbox(ctx, connect.NewRequest(&fsbv1.UpdateSandboxRequest{}))
			return err
		}, "name is required"},
		{"UpdateSandbox failure policy 99", func() error {
			_, err := c.UpdateSandbox(ctx, connect.NewRequest(&fsbv1.UpdateSandboxRequest{Name: "a", FailurePolicy: 99}))
			return err
		}, "failure_policy 99"},
		{"UpdateSandbox 65 labels", func() error {
			ls := map[string]string{}
			for i := range 65 {
				ls[fmt.Sprintf("k%d", i)] = "v"
			}
			_, err := c.UpdateSandbox(ctx, connect.NewRequest(&fsbv1.UpdateSandboxRequest{Name: "a", Labels: ls}))
			return err
		}, "labels: 65 entries, at most 64"},
		{"StreamLogs {}", func() error { return logs(&fsbv1.StreamLogsRequest{}) }, "name is required"},
		{"StreamLogs negative tail", func() error { return logs(&fsbv1.StreamLogsRequest{Name: "a", Tail: -1}) }, "tail -1"},
		{"ListSandboxes bad namespace", func() error {
			_, err := c.ListSandboxes(ctx, connect.NewRequest(&fsbv1.ListSandboxesRequest{Namespace: "NS!"}))
			return err
		}, `namespace "NS!"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v, want InvalidArgument saying %q", err, tc.want)
			}
		})
	}
}
