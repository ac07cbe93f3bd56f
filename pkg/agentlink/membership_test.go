package agentlink

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// statusAgent is an AgentService that reports one status and then
// heartbeats, as a real agent does while nothing changes.
type statusAgent struct {
	fsbv1connect.UnimplementedAgentServiceHandler
	id   string
	stop <-chan struct{} // closed when the test ends: streams end
}

func (f *statusAgent) WatchStatus(ctx context.Context, req *connect.Request[fsbv1.WatchStatusRequest], stream *connect.ServerStream[fsbv1.WatchStatusResponse]) error {
	if err := stream.Send(&fsbv1.WatchStatusResponse{Status: &fsbv1.AgentStatus{AgentId: f.id, Capacity: 3}}); err != nil {
		return err
	}
	tick := time.NewTicker(time.Duration(max(req.Msg.GetHeartbeatMillis(), 20)) * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-f.stop:
			return nil
		case <-tick.C:
			if err := stream.Send(&fsbv1.WatchStatusResponse{}); err != nil {
				return err
			}
		}
	}
}

// serveAgent serves a statusAgent reporting id over h2c, or over TLS with
// cert when it is not nil; it returns the listener's address.
func serveAgent(t *testing.T, id string, cert *tls.Certificate) string {
	t.Helper()
	stop := make(chan struct{})
	_, h := fsbv1connect.NewAgentServiceHandler(&statusAgent{id: id, stop: stop})
	srv := httptest.NewUnstartedServer(h)
	var p http.Protocols
	p.SetHTTP2(true)
	if cert == nil {
		p.SetUnencryptedHTTP2(true)
	} else {
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}, NextProtos: []string{"h2"}}
	}
	srv.Config.Protocols = &p
	if cert == nil {
		srv.Start()
	} else {
		srv.StartTLS()
	}
	// Streams end before Close, which waits for them.
	t.Cleanup(func() { close(stop); srv.Close() })
	return srv.Listener.Addr().String()
}

// events records the statuses a Set passes to Changed.
type events struct {
	mu      sync.Mutex
	changed []string // "id up|down" per call, with the registry's health then
	reg     *registry.Registry
}

func (e *events) record(st *fsbv1.AgentStatus) {
	health := "down"
	for _, a := range e.reg.Agents() {
		if a.ID == st.GetAgentId() && a.Healthy {
			health = "up"
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.changed = append(e.changed, st.GetAgentId()+" "+health)
}

func (e *events) has(entry string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range e.changed {
		if c == entry {
			return true
		}
	}
	return false
}

// healthy returns the registry's health of agent id ("" when unknown).
func healthy(reg *registry.Registry, id string) string {
	for _, a := range reg.Agents() {
		if a.ID == id {
			if a.Healthy {
				return "up"
			}
			return "down"
		}
	}
	return ""
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 5s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runSet runs s until the test ends, and checks that Run returns once its
// context ends: every goroutine that followed an agent, added late or
// removed, has stopped.
func runSet(t *testing.T, s *Set) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5s of its context's end")
		}
	})
}

// TestAgentsJoinAndLeaveWhileTheSetRuns: agents added after Run are
// followed; Synced waits for the source's listing and for each listed
// agent; a removed agent is down in the registry, Changed hears it, calls
// bound to it end, and its silence counts from its last message.
func TestAgentsJoinAndLeaveWhileTheSetRuns(t *testing.T) {
	reg := registry.New()
	ev := &events{reg: reg}
	s := New(Config{Discover: true, Registry: reg, Changed: ev.record, Heartbeat: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	runSet(t, s)

	s.Add("uid-a", serveAgent(t, "uid-a", nil))
	s.Add("uid-dead", "127.0.0.1:1") // nothing listens: found down
	eventually(t, "agent uid-a healthy in the registry", func() bool { return healthy(reg, "uid-a") == "up" })
	select {
	case <-s.Synced():
		t.Fatal("Synced before the source said it had listed its agents")
	case <-time.After(200 * time.Millisecond):
	}
	s.Listed()
	select {
	case <-s.Synced():
	case <-time.After(5 * time.Second):
		t.Fatal("not Synced 5s after the listing, with one agent seen and one found down")
	}

	b := serveAgent(t, "uid-b", nil)
	s.Add("uid-b", b)
	eventually(t, "agent uid-b, added after the listing, healthy", func() bool { return healthy(reg, "uid-b") == "up" })
	s.Add("uid-b", b) // the same again: nothing changes
	if !s.Up("uid-b") {
		t.Fatal("adding a followed agent again at its address took it down")
	}
	call, cancelCall := s.Bind(context.Background(), "uid-b")
	defer cancelCall()

	// A sandbox placed on uid-b: removed, it stays in the registry, down,
	// for its sandboxes to be found Lost.
	if err := reg.Assign("sb-on-b", "uid-b", nil); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	s.Remove("uid-b")
	if got := healthy(reg, "uid-b"); got != "down" {
		t.Errorf("registry health of a removed agent: %q, want down", got)
	}
	if !ev.has("uid-b down") {
		t.Errorf("Changed did not hear of the removed agent going down: %v", ev.changed)
	}
	select {
	case <-call.Done():
		if cause := context.Cause(call); cause == nil || !strings.Contains(cause.Error(), "not connected") {
			t.Errorf("a call bound to the removed agent ended with %v, want ErrAgentDown", cause)
		}
	case <-time.After(time.Second):
		t.Error("a call bound to the removed agent did not end")
	}
	up, since := s.Reachable("uid-b")
	if up || since.Before(before.Add(-time.Second)) || since.After(before) {
		t.Errorf("Reachable of the removed agent: up %v, silent since %s; want down since its last message, just before %s", up, since, before)
	}
	// It stays down: nothing follows it any more.
	time.Sleep(300 * time.Millisecond)
	if s.Up("uid-b") || healthy(reg, "uid-b") != "down" {
		t.Error("a removed agent came back up")
	}
	if healthy(reg, "uid-a") != "up" {
		t.Error("removing one agent took another down")
	}
	// Its last status is no agent's any more: what lists the agents
	// (fsb ctl agents, the janitor's question, a new term's recovery)
	// leaves it out.
	var listed []string
	for _, st := range s.Statuses() {
		listed = append(listed, st.GetAgentId())
	}
	if !slices.Equal(listed, []string{"uid-a"}) {
		t.Errorf("Statuses after uid-b's removal lists %v, want [uid-a]", listed)
	}
	s.Remove("no-such-key") // ignored

	// An agent that runs nothing is forgotten once removed (a pool's agent
	// scaled down): not left in the registry as unhealthy for good.
	s.Add("uid-c", serveAgent(t, "uid-c", nil))
	eventually(t, "agent uid-c healthy", func() bool { return healthy(reg, "uid-c") == "up" })
	s.Remove("uid-c")
	if got := healthy(reg, "uid-c"); got != "" {
		t.Errorf("registry after removing an agent with no sandbox: %q, want it forgotten", got)
	}
	if up, _ := s.Reachable("uid-c"); up {
		t.Error("a removed, forgotten agent is reachable")
	}
}

// TestSyncedCountsOnlyTheListing: a removed agent that never answered no
// longer holds Synced back, and an empty listing is synced at once.
func TestSyncedCountsOnlyTheListing(t *testing.T) {
	for _, tc := range []struct {
		name string
		add  func(s *Set)
	}{
		{"nothing listed", func(*Set) {}},
		{"the only agent removed before it was seen", func(s *Set) {
			s.Add("uid-x", "127.0.0.1:1")
			s.Remove("uid-x")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Not run: an agent not followed is never seen or found down.
			s := New(Config{Discover: true, Registry: registry.New(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			tc.add(s)
			select {
			case <-s.Synced():
				t.Fatal("Synced before Listed")
			default:
			}
			s.Listed()
			select {
			case <-s.Synced():
			default:
				t.Fatal("not Synced after Listed with nothing pending")
			}
		})
	}
}

// TestAnAgentReportingAnotherIDIsWarnedAbout: with KeyIsID, an agent whose
// reported ID is not its key (its pod's UID) is logged once with both, and
// followed all the same.
func TestAnAgentReportingAnotherIDIsWarnedAbout(t *testing.T) {
	reg := registry.New()
	var logs lockedBuffer
	s := New(Config{Discover: true, KeyIsID: true, Registry: reg, Heartbeat: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	runSet(t, s)
	s.Add("pod-uid-1", serveAgent(t, "agent-7", nil))
	s.Add("pod-uid-2", serveAgent(t, "pod-uid-2", nil))
	s.Listed()
	eventually(t, "both agents healthy", func() bool { return healthy(reg, "agent-7") == "up" && healthy(reg, "pod-uid-2") == "up" })
	out := logs.String()
	if n := strings.Count(out, "expected=pod-uid-1 reported=agent-7"); n != 1 {
		t.Errorf("%d warnings naming both IDs, want 1:\n%s", n, out)
	}
	if strings.Contains(out, "expected=pod-uid-2") {
		t.Errorf("an agent reporting its pod's UID was warned about:\n%s", out)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestServerNameVerifiesAgentsDialedByIP: an agent dialed by IP whose
// certificate names only the agents' Service is reached with the server
// name given, and refused without it (the IP is not in the certificate).
func TestServerNameVerifiesAgentsDialedByIP(t *testing.T) {
	ca := rig.NewCA(t)
	caFile, cert := ca.File(t), ca.IssueTLS(t, []string{"fsb-agent.fsb-system.svc"})
	addr := "https://" + serveAgent(t, "uid-tls", &cert)
	for _, tc := range []struct {
		serverName string
		up         bool
	}{
		{"fsb-agent.fsb-system.svc", true},
		{"", false},
		{"another.name", false},
	} {
		t.Run("name="+tc.serverName, func(t *testing.T) {
			tr, err := Transport(caFile, tc.serverName)
			if err != nil {
				t.Fatal(err)
			}
			reg := registry.New()
			s := New(Config{Addresses: []string{addr}, Registry: reg, HTTPClient: &http.Client{Transport: tr},
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			runSet(t, s)
			select {
			case <-s.Synced():
			case <-time.After(5 * time.Second):
				t.Fatal("not Synced within 5s")
			}
			if got := s.Up("uid-tls"); got != tc.up {
				t.Errorf("agent up: %v, want %v", got, tc.up)
			}
		})
	}
}

// TestGoneIsWhatTheSourceNoLongerHas: with agents keyed by the ID they
// report (pods, by UID), an agent is gone for good once the source has
// listed its agents and no longer follows it; with a fixed list, or
// before the listing, no agent is.
func TestGoneIsWhatTheSourceNoLongerHas(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	static := New(Config{Addresses: []string{"127.0.0.1:1"}, Registry: registry.New(), Logger: quiet})
	if static.Gone("agent-9") {
		t.Error("an agent of a fixed list is gone: one not heard from may yet return")
	}
	s := New(Config{Discover: true, KeyIsID: true, Registry: registry.New(), Logger: quiet})
	s.Add("uid-1", "127.0.0.1:1")
	if s.Gone("uid-2") {
		t.Error("an agent is gone before the source listed its agents")
	}
	s.Listed()
	for _, c := range []struct {
		id   string
		gone bool
	}{{"uid-1", false}, {"uid-2", true}} {
		if got := s.Gone(c.id); got != c.gone {
			t.Errorf("Gone(%s) = %v, want %v", c.id, got, c.gone)
		}
	}
	s.Remove("uid-1")
	if !s.Gone("uid-1") {
		t.Error("a removed agent is not gone")
	}
	// An agent followed under one key that reports another ID (not its
	// pod's UID) is there under that ID.
	s.Add("uid-3", "127.0.0.1:1")
	s.update(s.byKey["uid-3"], &fsbv1.AgentStatus{AgentId: "impostor", Capacity: 1})
	if s.Gone("impostor") {
		t.Error("an agent that a followed pod's agent reports is gone")
	}
}
