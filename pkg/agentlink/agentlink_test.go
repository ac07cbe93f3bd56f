package agentlink

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
)

// TestReconnectAttemptsAreAtMostASecondApart points a Set at an address
// that accepts connections and closes them at once, as a restarting agent
// would, and checks that the attempts to reach it back off to at most a
// second apart: a restarted agent is seen within about a second.
func TestReconnectAttemptsAreAtMostASecondApart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var attempts []time.Time
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			attempts = append(attempts, time.Now())
			mu.Unlock()
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })

	s := New(Config{Addresses: []string{ln.Addr().String()}, Registry: registry.New(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	s.Run(ctx)

	mu.Lock()
	defer mu.Unlock()
	if len(attempts) < 6 {
		t.Fatalf("%d attempts in 4s, want the back-off's 100 ms, 200 ms, ... capped at a second: %v", len(attempts), attempts)
	}
	for i := 1; i < len(attempts); i++ {
		// A failed attempt costs a little on top of the wait.
		if gap := attempts[i].Sub(attempts[i-1]); gap > 1300*time.Millisecond {
			t.Errorf("attempt %d came %s after the one before; want about a second at most", i, gap)
		}
	}
}

// TestStaleStatusDoesNotRetakeAReleasedSlot: a delete stops the task (the
// agent sends a status listing it ended), removes the container and
// answers; the controller releases the slot. A status read after that
// release but sent before the removal must not take the slot again, or
// creates are refused until the next status. A running sandbox the
// registry does not hold is still counted.
func TestStaleStatusDoesNotRetakeAReleasedSlot(t *testing.T) {
	reg := registry.New()
	s := New(Config{Addresses: []string{"127.0.0.1:1"}, Registry: reg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	a := s.byKey["127.0.0.1:1"]
	status := func(sbs ...*fsbv1.AgentSandbox) *fsbv1.AgentStatus {
		return &fsbv1.AgentStatus{AgentId: "agent-1", Capacity: 2, Sandboxes: sbs}
	}
	sandbox := func(id string, phase fsbv1.Phase) *fsbv1.AgentSandbox {
		return &fsbv1.AgentSandbox{SandboxId: id, Revision: 1, Phase: phase}
	}
	s.update(a, status(sandbox("sb-1", fsbv1.Phase_PHASE_RUNNING)))
	if _, ok := reg.Lookup("sb-1"); !ok {
		t.Fatal("a running sandbox holds no slot")
	}
	s.update(a, status(sandbox("sb-1", fsbv1.Phase_PHASE_SUCCEEDED))) // stopped by the delete
	reg.Release("sb-1")                                               // the delete answered
	s.update(a, status(sandbox("sb-1", fsbv1.Phase_PHASE_SUCCEEDED), sandbox("sb-2", fsbv1.Phase_PHASE_RUNNING)))
	if _, ok := reg.Lookup("sb-1"); ok {
		t.Error("a stale status took the released slot of a deleted sandbox again")
	}
	if _, ok := reg.Lookup("sb-2"); !ok {
		t.Error("a sandbox new in the status holds no slot")
	}
	s.update(a, status(sandbox("sb-2", fsbv1.Phase_PHASE_RUNNING)))
	if _, ok := reg.Lookup("sb-1"); ok {
		t.Error("the deleted sandbox holds a slot once its status is gone")
	}
	// Two revisions of sb-3, the ended one listed first, while the
	// registry holds nothing for it (between a release and the next
	// placement): the running one takes the slot.
	s.update(a, status(sandbox("sb-2", fsbv1.Phase_PHASE_RUNNING), sandbox("sb-3", fsbv1.Phase_PHASE_FAILED)))
	reg.Release("sb-3")
	second := sandbox("sb-3", fsbv1.Phase_PHASE_RUNNING)
	second.Revision = 2
	s.update(a, status(sandbox("sb-2", fsbv1.Phase_PHASE_RUNNING), sandbox("sb-3", fsbv1.Phase_PHASE_FAILED), second))
	if _, ok := reg.Lookup("sb-3"); !ok {
		t.Error("a running revision listed after an ended one of the same sandbox holds no slot")
	}
}

// TestStatusPoolReachesTheRegistry: the pool an agent reports is the pool
// the registry files it under, so that a request without a pool never lands
// on a pool's agent and a request naming the pool does; a later status
// that moves the agent to another pool moves it in the registry too.
func TestStatusPoolReachesTheRegistry(t *testing.T) {
	reg := registry.New()
	reg.DeclarePool("p1", true)
	s := New(Config{Addresses: []string{"127.0.0.1:1", "127.0.0.1:2"}, Registry: reg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	s.update(s.byKey["127.0.0.1:1"], &fsbv1.AgentStatus{AgentId: "pooled", Capacity: 4, Pool: "p1"})
	s.update(s.byKey["127.0.0.1:2"], &fsbv1.AgentStatus{AgentId: "default", Capacity: 4})

	pools := map[string]string{}
	for _, a := range reg.Agents() {
		pools[a.ID] = a.Pool
	}
	if pools["pooled"] != "p1" || pools["default"] != "" {
		t.Fatalf("registry pools %v: want pooled in p1, default in the default pool", pools)
	}
	for i := range 4 {
		p, err := reg.Allocate(registry.Request{SandboxID: fmt.Sprintf("plain-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if p.AgentID != "default" {
			t.Errorf("a sandbox without a pool went to %s, want the default pool's agent", p.AgentID)
		}
	}
	if p, err := reg.Allocate(registry.Request{SandboxID: "in-p1", Pool: "p1"}); err != nil || p.AgentID != "pooled" {
		t.Errorf("a sandbox of pool p1 went to %v, %v: want the agent that reports p1", p, err)
	}

	// The same agent now reports the default pool.
	s.update(s.byKey["127.0.0.1:1"], &fsbv1.AgentStatus{AgentId: "pooled", Capacity: 4})
	if got := reg.PoolAgents("p1"); len(got) != 0 {
		t.Errorf("pool p1 still holds %v after its agent reported the default pool", got)
	}
}
