package fault

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/emptypb"
)

// TestRelayKeepsTheMarks sends a marked error over a real Connect call and
// relays what the client received: code, message and marks survive, where
// relaying the received error itself would drop the marks.
func TestRelayKeepsTheMarks(t *testing.T) {
	sent := OnAgent(Unreachable(Containerd, errors.New("containerd at /c.sock is unreachable")), "local")
	mux := http.NewServeMux()
	mux.Handle("/t.T/Fail", connect.NewUnaryHandler("/t.T/Fail", func(context.Context, *connect.Request[emptypb.Empty]) (*connect.Response[emptypb.Empty], error) {
		return nil, sent
	}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	_, err := connect.NewClient[emptypb.Empty, emptypb.Empty](srv.Client(), srv.URL+"/t.T/Fail").CallUnary(context.Background(), connect.NewRequest(&emptypb.Empty{}))
	var got *connect.Error
	if !errors.As(err, &got) || !connect.IsWireError(got) {
		t.Fatalf("call: %v, want a wire error", err)
	}
	relayed := Relay(got)
	if part, agent := Of(relayed); part != Containerd || agent != "local" {
		t.Errorf("Of(relayed) = %q, %q; want containerd, local", part, agent)
	}
	if relayed.Code() != connect.CodeUnavailable || relayed.Message() != "containerd at /c.sock is unreachable" {
		t.Errorf("relayed = %v", relayed)
	}
	if connect.IsWireError(relayed) {
		t.Error("the relayed error is still a wire error: Connect would not send its marks")
	}
}

func TestOnAgentKeepsTheAgentsOwnMark(t *testing.T) {
	err := OnAgent(OnAgent(Unreachable(Containerd, errors.New("x")), "node-a"), "other")
	if _, agent := Of(err); agent != "node-a" {
		t.Errorf("agent = %q, want node-a", agent)
	}
	if part, agent := Of(errors.New("plain")); part != "" || agent != "" {
		t.Errorf("Of(plain) = %q, %q", part, agent)
	}
}
