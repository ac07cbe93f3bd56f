// Package fault says which part of Fast Sandbox a failed call could not
// reach, in a form that survives the hops between the parts: the agent
// marks an error it got because its containerd did not answer, the fast
// path one it got because an agent (or the store) did not answer and
// passes an agent's mark on, and the CLI words each for the person who
// typed the command. The mark rides in the Connect error's metadata — an
// HTTP header or trailer in every protocol Connect speaks — so it needs no
// proto message and no matching of words in a message.
package fault

import (
	"errors"

	"connectrpc.com/connect"
)

// Metadata keys of a marked error.
const (
	// UnreachableKey holds the Part that could not be reached.
	UnreachableKey = "Fsb-Unreachable"
	// AgentKey holds the ID of the agent the error comes from or is about.
	AgentKey = "Fsb-Agent"
)

// Part is a part of Fast Sandbox that a call may fail to reach.
type Part string

// The parts.
const (
	// Containerd is an agent's containerd.
	Containerd Part = "containerd"
	// Agent is an agent, as seen from the controller.
	Agent Part = "agent"
	// Store is the controller's store (the API server, or the embedded
	// database).
	Store Part = "store"
	// Controller is the controller itself, when it takes no calls yet or
	// any more (starting, stopping).
	Controller Part = "controller"
)

// Unreachable returns an Unavailable error with err's message that says
// part could not be reached.
func Unreachable(part Part, err error) *connect.Error {
	ce := connect.NewError(connect.CodeUnavailable, err)
	ce.Meta().Set(UnreachableKey, string(part))
	return ce
}

// OnAgent marks err as coming from, or being about, agent id, unless it
// already names an agent (the agent's own mark is the more precise), and
// returns it.
func OnAgent(err *connect.Error, id string) *connect.Error {
	if err.Meta().Get(AgentKey) == "" {
		err.Meta().Set(AgentKey, id)
	}
	return err
}

// Of returns the part an error says could not be reached and the agent it
// names; each is empty when the error does not say.
func Of(err error) (part Part, agentID string) {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return "", ""
	}
	return Part(ce.Meta().Get(UnreachableKey)), ce.Meta().Get(AgentKey)
}

// Relay returns an error another part answered with as one this server can
// answer with in turn: the same code, message, details and marks. Connect
// sends no metadata of an error that came over the wire, so relaying the
// received error itself would drop the marks.
func Relay(err *connect.Error) *connect.Error {
	if !connect.IsWireError(err) {
		return err
	}
	out := connect.NewError(err.Code(), errors.New(err.Message()))
	for _, d := range err.Details() {
		out.AddDetail(d)
	}
	for _, k := range []string{UnreachableKey, AgentKey} {
		if v := err.Meta().Get(k); v != "" {
			out.Meta().Set(k, v)
		}
	}
	return out
}
