package ctl

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/fault"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
)

func TestErrorMessages(t *testing.T) {
	f := newFake()
	f.add("team", "taken", "busybox", 0)
	url := serve(t, f)

	// A port nothing listens on: bind one, note it, close it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close()

	// Something that answers HTTP but is not the controller.
	other := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(other.Close)

	tests := []struct {
		name   string
		server string
		token  string
		call   func(*Client) error
		want   string
	}{{
		name: "wrong token", server: url, token: "nope",
		call: func(c *Client) error { return c.List(context.Background(), ListOptions{}) },
		want: "the controller refused the token: set FSB_TOKEN or --token (see .fsb/env after make up), or --kubeconfig with a Kubernetes token",
	}, {
		name: "no token", server: url,
		call: func(c *Client) error { return c.Get(context.Background(), "x", "") },
		want: "the controller wants a token: set FSB_TOKEN or --token (see .fsb/env after make up), or --kubeconfig with a Kubernetes token",
	}, {
		name: "wrong token on a stream", server: url, token: "nope",
		call: func(c *Client) error { return c.Logs(context.Background(), LogsOptions{Name: "taken", Follow: true}) },
		want: "the controller refused the token: set FSB_TOKEN or --token (see .fsb/env after make up), or --kubeconfig with a Kubernetes token",
	}, {
		name: "get of a missing sandbox", server: url, token: testToken,
		call: func(c *Client) error { return c.Get(context.Background(), "ghost", "") },
		want: "sandbox ghost not found in namespace team",
	}, {
		name: "logs of a missing sandbox", server: url, token: testToken,
		call: func(c *Client) error { return c.Logs(context.Background(), LogsOptions{Name: "ghost"}) },
		want: "sandbox ghost not found in namespace team",
	}, {
		name: "delete of a missing sandbox", server: url, token: testToken,
		call: func(c *Client) error { return c.Delete(context.Background(), DeleteOptions{Names: []string{"ghost"}}) },
		want: "sandbox ghost not found in namespace team",
	}, {
		name: "name taken with another spec", server: url, token: testToken,
		call: func(c *Client) error { return c.Run(context.Background(), RunOptions{Name: "taken", Image: "alpine"}) },
		want: "sandbox taken already exists in namespace team with another spec: delete it first (fsb ctl delete taken) or pick another name",
	}, {
		name: "connection refused", server: refused, token: testToken,
		call: func(c *Client) error { return c.List(context.Background(), ListOptions{}) },
		want: "cannot reach the controller at " + refused + ": is it running? (make up)",
	}, {
		name: "connection refused on a stream", server: refused, token: testToken,
		call: func(c *Client) error { return c.Logs(context.Background(), LogsOptions{Name: "x", Follow: true}) },
		want: "cannot reach the controller at " + refused + ": is it running? (make up)",
	}, {
		name: "not the controller", server: other.URL, token: testToken,
		call: func(c *Client) error { return c.Agents(context.Background(), "") },
		want: other.URL + " does not serve fsb.v1.FastPathService: is --server the controller's fast-path address (port 9090)?",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, _ := client(t, tt.server, tt.token, "team")
			err := tt.call(c)
			if err == nil || err.Error() != tt.want {
				t.Errorf("err = %v\nwant    %s", err, tt.want)
			}
			if IsUsage(err) {
				t.Error("a request error must not count as a usage error")
			}
		})
	}
}

// TestServerMessagesPassThrough checks that the errors whose remedy only the
// server knows keep its words, without Connect's code prefix.
func TestServerMessagesPassThrough(t *testing.T) {
	tests := []struct {
		code connect.Code
		msg  string
		want string
	}{
		{connect.CodeInvalidArgument, `name "Demo": must be a DNS-1123 label`, `name "Demo": must be a DNS-1123 label`},
		{connect.CodeResourceExhausted, "no agent has a free slot with port 8080 free", "no agent has a free slot with port 8080 free"},
		{connect.CodeFailedPrecondition, "runtime gvisor is not installed on any agent", "runtime gvisor is not installed on any agent"},
		{connect.CodeNotFound, "image nope:latest not found", "image nope:latest not found"}, // run: NotFound is the image's
		{connect.CodeUnavailable, "rebuilding the registry", "the controller is not ready: rebuilding the registry"},
		{connect.CodeInternal, "store: disk full", "the controller failed: store: disk full"},
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			f := newFake()
			f.createErr = connect.NewError(tt.code, errors.New(tt.msg))
			c, _, _ := client(t, serve(t, f), testToken, "")
			err := c.Run(context.Background(), RunOptions{Name: "demo", Image: "nope:latest"})
			if err == nil || err.Error() != tt.want {
				t.Errorf("err = %v, want %s", err, tt.want)
			}
		})
	}
}

func TestServerURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:9090":  "http://127.0.0.1:9090",
		"http://127.0.0.1:9090/": "http://127.0.0.1:9090",
		"127.0.0.1:9090":         "http://127.0.0.1:9090",
		"https://fsb.example":    "https://fsb.example",
	} {
		if got, err := serverURL(in); err != nil || got != want {
			t.Errorf("serverURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "ftp://x", "http://"} {
		if _, err := serverURL(bad); !IsUsage(err) {
			t.Errorf("serverURL(%q) = %v, want a usage error", bad, err)
		}
	}
}

// TestUnavailableNamesThePart checks that an Unavailable answer is worded
// by the part the server marked as unreachable, not as a controller that
// is not ready.
func TestUnavailableNamesThePart(t *testing.T) {
	tests := []struct {
		name string
		err  *connect.Error
		want string
	}{{
		name: "containerd",
		err:  fault.OnAgent(fault.Unreachable(fault.Containerd, errors.New("containerd at /run/c.sock is unreachable: connection refused")), "local"),
		want: "the agent local could not reach its containerd: containerd at /run/c.sock is unreachable: connection refused",
	}, {
		name: "agent",
		err:  fault.OnAgent(fault.Unreachable(fault.Agent, errors.New("agent local at 127.0.0.1:5758 is unreachable: connection refused")), "local"),
		want: "the controller could not reach the agent local: agent local at 127.0.0.1:5758 is unreachable: connection refused",
	}, {
		name: "store",
		err:  fault.Unreachable(fault.Store, errors.New("the store is unreachable: dial tcp: refused")),
		want: "the controller could not reach its store: the store is unreachable: dial tcp: refused",
	}, {
		name: "controller",
		err:  fault.Unreachable(fault.Controller, errors.New("the controller is stopping")),
		want: "the controller is not ready: the controller is stopping",
	}, {
		name: "unmarked",
		err:  connect.NewError(connect.CodeUnavailable, errors.New("rebuilding the registry")),
		want: "the controller is not ready: rebuilding the registry",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			f.createErr = tt.err
			c, _, _ := client(t, serve(t, f), testToken, "")
			err := c.Run(context.Background(), RunOptions{Name: "demo", Image: "busybox"})
			if err == nil || err.Error() != tt.want {
				t.Errorf("err = %v\nwant    %s", err, tt.want)
			}
		})
	}
}

// TestRequestTooLarge sends a create over a controller's read limit (the
// real Connect handler with WithReadMaxBytes, as the controller's
// --max-request-bytes sets it): the message says the request is too large,
// names the flag and what to shorten.
func TestRequestTooLarge(t *testing.T) {
	mux := http.NewServeMux()
	path, api := fsbv1connect.NewFastPathServiceHandler(newFake(), connect.WithReadMaxBytes(1024))
	mux.Handle(path, api)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	c, _, _ := client(t, srv.URL, testToken, "")
	err := c.Run(context.Background(), RunOptions{Name: "big", Image: "busybox", Env: []string{"BIG=" + strings.Repeat("x", 4096)}})
	want := "the request is too large for the controller: message size "
	if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "is larger than configured max 1024 bytes (its --max-request-bytes): shorten") {
		t.Errorf("err = %v\nwant %s... is larger than configured max 1024 bytes (its --max-request-bytes): shorten ...", err, want)
	}
}

// TestAnswerLost: only a call that may have reached the controller counts
// as a create whose answer was lost; a dial that failed, even by running
// out of time, sent nothing.
func TestAnswerLost(t *testing.T) {
	dialTimeout := connect.NewError(connect.CodeDeadlineExceeded, &net.OpError{Op: "dial", Net: "tcp", Err: context.DeadlineExceeded})
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"dial ran out of time", dialTimeout, false},
		{"refused", connect.NewError(connect.CodeUnavailable, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}), false},
		{"deadline after sending", connect.NewError(connect.CodeDeadlineExceeded, context.DeadlineExceeded), true},
		{"connection dropped", connect.NewError(connect.CodeUnavailable, io.ErrUnexpectedEOF), true},
		{"interrupted", connect.NewError(connect.CodeCanceled, context.Canceled), true},
	} {
		if got := answerLost(tc.err); got != tc.want {
			t.Errorf("%s: answerLost = %v, want %v", tc.name, got, tc.want)
		}
	}
}
