package ctl

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/fault"
)

// target names the sandbox a call was about, for messages such as "sandbox
// demo not found in namespace default". An empty name means the call was
// about no single sandbox.
type target struct {
	name, namespace string
	// create is set for CreateSandbox, whose NotFound is about what the
	// spec names (an image, a pool), never about the sandbox itself.
	create bool
}

// describe turns an error of a call to the controller into a sentence that
// says what went wrong and what to do about it. An error that did not come
// from a call (every call's error is a *connect.Error) is already worded
// and passes as it is.
func (c *Client) describe(err error, t target) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return errors.New("interrupted")
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return err
	}
	code := connect.CodeOf(err)
	if !connect.IsWireError(err) {
		// The call never got an answer from a Connect server.
		var unverified *tls.CertificateVerificationError
		switch {
		case errors.As(err, &unverified):
			return fmt.Errorf("cannot verify the controller at %s: %v: give the CA certificate that signed its certificate with --ca-file or FSB_CA_FILE (the ca.crt of scripts/deploy-secrets.sh)", c.server, unverified.Err)
		case unreachable(err):
			return fmt.Errorf("cannot reach the controller at %s: is it running? (make up)", c.server)
		case code == connect.CodeDeadlineExceeded:
			return fmt.Errorf("the controller at %s did not answer in time", c.server)
		case code == connect.CodeUnimplemented:
			return fmt.Errorf("%s does not serve fsb.v1.FastPathService: is --server the controller's fast-path address (port 9090)?", c.server)
		case code == connect.CodeUnavailable || code == connect.CodeUnknown:
			return fmt.Errorf("lost the connection to the controller at %s: %v", c.server, message(err))
		}
	}
	switch code {
	case connect.CodeUnauthenticated:
		if c.token == "" {
			return errors.New("the controller wants a token: set FSB_TOKEN or --token (see .fsb/env after make up), or --kubeconfig with a Kubernetes token")
		}
		return errors.New("the controller refused the token: set FSB_TOKEN or --token (see .fsb/env after make up), or --kubeconfig with a Kubernetes token")
	case connect.CodePermissionDenied:
		return fmt.Errorf("not allowed: %s", message(err))
	case connect.CodeNotFound:
		if t.name != "" && !t.create {
			return fmt.Errorf("sandbox %s not found in namespace %s", t.name, t.namespace)
		}
	case connect.CodeAlreadyExists:
		if t.create {
			return fmt.Errorf("sandbox %s already exists in namespace %s with another spec: delete it first (fsb ctl delete %s) or pick another name",
				t.name, t.namespace, t.name)
		}
	case connect.CodeUnimplemented:
		return fmt.Errorf("the controller at %s does not support this call (%s): is it an older release?", c.server, message(err))
	case connect.CodeUnavailable:
		return c.unavailable(err)
	case connect.CodeResourceExhausted:
		// Connect's own words for a request over the server's read limit
		// (TestRequestTooLarge holds them to a real server).
		if strings.Contains(message(err), "larger than configured max") {
			return fmt.Errorf("the request is too large for the controller: %s bytes (its --max-request-bytes): "+
				"shorten the command, arguments, environment or labels, or have the limit raised", message(err))
		}
	case connect.CodeDeadlineExceeded:
		return fmt.Errorf("timed out: %s", message(err))
	case connect.CodeInternal, connect.CodeUnknown, connect.CodeDataLoss:
		return fmt.Errorf("the controller failed: %s", message(err))
	}
	// InvalidArgument, ResourceExhausted, FailedPrecondition, Aborted and
	// the rest: the server's own words say what to fix.
	return errors.New(message(err))
}

// unavailable words an Unavailable answer by the part the server says it
// could not reach (see pkg/fault), so that the user looks at the right
// machine: the agent's containerd, the agent, the store, or the controller.
func (c *Client) unavailable(err error) error {
	part, agentID := fault.Of(err)
	agent := "the agent"
	if agentID != "" {
		agent += " " + agentID
	}
	switch part {
	case fault.Containerd:
		return fmt.Errorf("%s could not reach its containerd: %s", agent, message(err))
	case fault.Agent:
		return fmt.Errorf("the controller could not reach %s: %s", agent, message(err))
	case fault.Store:
		return fmt.Errorf("the controller could not reach its store: %s", message(err))
	}
	return fmt.Errorf("the controller is not ready: %s", message(err))
}

// message returns the error's message without Connect's "code: " prefix.
func message(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) && ce.Message() != "" {
		return ce.Message()
	}
	return err.Error()
}

// unreachable reports whether err means no connection could be made: refused,
// no route, an unknown host or a dial that timed out.
func unreachable(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) {
		return true
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "dial"
}
