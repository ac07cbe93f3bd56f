package fastpath

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// TestLogsOfAnEarlierRevisionOnAnotherAgent: revision 1 of a sandbox ran
// on agent-2, revision 2 runs on agent-1. logs reads the current revision
// by default, and revision 1 with --revision 1 or --previous: agent-1 has
// no such log, agent-2 does. A revision to come is NotFound, the previous
// of revision 1 FailedPrecondition.
func TestLogsOfAnEarlierRevisionOnAnotherAgent(t *testing.T) {
	p := newPlane(t, withAgents(2))
	ctx := context.Background()
	for _, r := range []struct {
		agent    *testAgent
		revision int64
		line     string
	}{{p.agents[1], 1, "from revision one"}, {p.agents[0], 2, "from revision two"}} {
		_, err := r.agent.client().CreateSandbox(ctx, connect.NewRequest(&fsbv1.AgentServiceCreateSandboxRequest{
			SandboxId: "sb-logs", Revision: r.revision, Namespace: "default", Name: "logs", Persisted: true,
			Spec: &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"sh", "-c", "echo " + r.line + "; sleep 300"}},
		}))
		if err != nil {
			t.Fatal(err)
		}
	}
	// The object says revision 2 on agent-1, as the controller leaves it
	// after a recreate.
	if _, err := p.store.Create(ctx, &v1alpha1.Sandbox{
		ObjectMeta: metav1.ObjectMeta{Name: "logs", Namespace: "default", Finalizers: []string{v1alpha1.Finalizer},
			Annotations: map[string]string{v1alpha1.AnnotationID: "sb-logs", v1alpha1.AnnotationAgent: "agent-1", v1alpha1.AnnotationRevision: "2"}},
		Spec: v1alpha1.SandboxSpec{Image: rig.ImageRef, Command: []string{"sh"}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: "single", Spec: fastSpec("sleep", "300")})); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the object in the cache", func() bool {
		_, ok := p.ctrl.Get("default", "logs")
		return ok
	})

	srv := httptest.NewServer(handler(p.fp))
	t.Cleanup(srv.Close)
	client := fsbv1connect.NewFastPathServiceClient(http.DefaultClient, srv.URL)
	read := func(req *fsbv1.StreamLogsRequest) (string, error) {
		in, err := client.StreamLogs(ctx, connect.NewRequest(req))
		if err != nil {
			return "", err
		}
		defer in.Close()
		var text []string
		for in.Receive() {
			for _, l := range in.Msg().GetLines() {
				text = append(text, l.GetText())
			}
		}
		return strings.Join(text, "\n"), in.Err()
	}
	for _, tc := range []struct {
		name string
		req  *fsbv1.StreamLogsRequest
		want string       // a line the log has
		code connect.Code // 0: no error
	}{
		{"current", &fsbv1.StreamLogsRequest{Name: "logs"}, "from revision two", 0},
		{"previous", &fsbv1.StreamLogsRequest{Name: "logs", Previous: true}, "from revision one", 0},
		{"revision 1", &fsbv1.StreamLogsRequest{Name: "logs", Revision: 1}, "from revision one", 0},
		{"revision 2", &fsbv1.StreamLogsRequest{Name: "logs", Revision: 2}, "from revision two", 0},
		{"a revision to come", &fsbv1.StreamLogsRequest{Name: "logs", Revision: 3}, "", connect.CodeNotFound},
		{"previous of revision 1", &fsbv1.StreamLogsRequest{Name: "single", Previous: true}, "", connect.CodeFailedPrecondition},
		{"revision and previous", &fsbv1.StreamLogsRequest{Name: "logs", Revision: 1, Previous: true}, "", connect.CodeInvalidArgument},
		{"negative revision", &fsbv1.StreamLogsRequest{Name: "logs", Revision: -1}, "", connect.CodeInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.code != 0 {
				if _, err := read(tc.req); connect.CodeOf(err) != tc.code {
					t.Errorf("logs: %v, want code %v", err, tc.code)
				}
				return
			}
			// The line is written by the sandbox's log driver: wait for it.
			var text string
			var err error
			eventually(t, 10*time.Second, "the line "+tc.want, func() bool {
				text, err = read(tc.req)
				return err == nil && strings.Contains(text, tc.want)
			})
			if other := map[string]string{"from revision one": "from revision two", "from revision two": "from revision one"}[tc.want]; strings.Contains(text, other) {
				t.Errorf("the log of one revision has the other's line: %q", text)
			}
		})
	}
}

// handler serves the fast path without authentication.
func handler(fp *Server) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(fp.Handler())
	return mux
}
