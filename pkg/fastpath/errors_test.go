package fastpath

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// TestNoCapacityNamesTheSandboxAndTheFix takes a port and then every slot
// of an agent (capacity 5), and checks that a refused create names the
// sandbox by its name and says what to change: which sandbox holds the
// port, and that the agents are full.
func TestNoCapacityNamesTheSandboxAndTheFix(t *testing.T) {
	p := newPlane(t)
	ctx := context.Background()
	mode := fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST
	create := func(name string, ports ...int32) error {
		spec := fastSpec("sleep", "300")
		spec.ExposedPorts = ports
		spec.ConsistencyMode = mode
		_, err := p.fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: name, Namespace: "team", Spec: spec}))
		return err
	}
	refused := func(name string, ports []int32, want string) {
		t.Helper()
		var ce *connect.Error
		if err := create(name, ports...); !errors.As(err, &ce) || ce.Code() != connect.CodeResourceExhausted {
			t.Errorf("create %s: %v, want ResourceExhausted", name, err)
			return
		}
		if ce.Message() != want {
			t.Errorf("create %s:\n got %s\nwant %s", name, ce.Message(), want)
		}
	}
	if err := create("web", 8080); err != nil {
		t.Fatal(err)
	}
	// The holder's name comes from the agent's status, which follows the
	// create.
	eventually(t, 5*time.Second, "the agent reports web", func() bool {
		for _, st := range p.control.set.Statuses() {
			for _, sb := range st.GetSandboxes() {
				if sb.GetName() == "web" {
					return true
				}
			}
		}
		return false
	})
	refused("web2", []int32{8080}, "no agent can take sandbox web2 in namespace team (1 agent: 1 has a port of [8080] in use): "+
		"port 8080 is held by sandbox team/web (agent agent-1): delete it or pick another port")

	for i := range 4 {
		if err := create(fmt.Sprintf("filler-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	refused("late", nil, "no agent has a free slot for sandbox late in namespace team (1 agent, all full): delete a sandbox or add capacity")
	// STRONG: the controller places it and words the same refusal.
	mode = fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG
	refused("late-strong", nil, "no agent has a free slot for sandbox late-strong in namespace team (1 agent, all full): delete a sandbox or add capacity")
}
