package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/proto"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
	"github.com/fast-sandbox/fast-sandbox/pkg/logfile"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// warmEntry is the test image's warm kind with count sandboxes.
func warmEntry(count int32) *fsbv1.WarmEntry {
	return &fsbv1.WarmEntry{Image: rig.ImageRef, Count: count}
}

// setWarm sets the agent's warm targets and fails the test on error.
func (h *harness) setWarm(entries ...*fsbv1.WarmEntry) *fsbv1.SetWarmResponse {
	h.t.Helper()
	req := &fsbv1.SetWarmRequest{}
	for _, e := range entries {
		key, ok := v1alpha1.WarmEntryKey(e)
		if !ok {
			h.t.Fatalf("warm entry %v has no key", e)
		}
		req.Targets = append(req.Targets, &fsbv1.WarmTarget{Key: key, Entry: e})
	}
	resp, err := h.client.SetWarm(context.Background(), connect.NewRequest(req))
	if err != nil {
		h.t.Fatalf("SetWarm: %v", err)
	}
	return resp.Msg
}

// stock returns the status's warm stock of entry's kind.
func (h *harness) stock(e *fsbv1.WarmEntry) (ready, starting int32) {
	h.t.Helper()
	key, _ := v1alpha1.WarmEntryKey(e)
	resp, err := h.client.GetStatus(context.Background(), connect.NewRequest(&fsbv1.GetStatusRequest{}))
	if err != nil {
		h.t.Fatalf("GetStatus: %v", err)
	}
	for _, s := range resp.Msg.GetStatus().GetWarm() {
		if s.GetKey() == key {
			return s.GetReady(), s.GetStarting()
		}
	}
	return 0, 0
}

// waitStock waits until entry's kind has ready warm sandboxes and none
// starting.
func (h *harness) waitStock(e *fsbv1.WarmEntry, ready int32) {
	h.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, s := h.stock(e)
		if r == ready && s == 0 {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("warm stock never reached %d ready; it is %d ready, %d starting", ready, r, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// warmContainers counts the warm containers containerd holds for the agent.
func (h *harness) warmContainers() int {
	h.t.Helper()
	cs, err := h.cd.Containers(context.Background(), fmt.Sprintf("labels.%q==%s,labels.%q", runtime.LabelAgent, h.agentID, runtime.LabelWarm))
	if err != nil {
		h.t.Fatal(err)
	}
	return len(cs)
}

// logTexts reads a sandbox's log records' texts.
func logTexts(t *testing.T, path string) []string {
	t.Helper()
	var out []string
	err := logfile.Stream(context.Background(), path, logfile.StreamOptions{}, func(ls []logfile.Line) error {
		for _, l := range ls {
			out = append(out, string(l.Text))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read log %s: %v", path, err)
	}
	return out
}

func TestWarmClaimRunsTheCreatesProcessAndRefills(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withCapacity(4))
	entry := warmEntry(2)
	// No stock yet: a matching create is cold.
	cold := h.create(spec("sleep 1000"))
	if cold.GetWarm() || strings.HasPrefix(cold.GetContainerId(), runtime.WarmIDPrefix) {
		t.Fatalf("create with no warm stock was served warm: %v", cold)
	}
	h.setWarm(entry)
	h.waitStock(entry, 2)
	if n := h.warmContainers(); n != 2 {
		t.Fatalf("containerd holds %d warm containers, want 2", n)
	}
	// Warm sandboxes hold slots: 1 sandbox + 2 warm of 4, so one cold
	// create of another kind fits and the next takes a warm one's slot.
	other := spec("sleep 1000")
	other.Resources = &fsbv1.Resources{Memory: "64Mi"}
	o1 := h.create(other)
	if o1.GetWarm() {
		t.Fatalf("a create of another kind was served warm: %v", o1)
	}
	if r, _ := h.stock(entry); r != 2 {
		t.Fatalf("a create of another kind changed the stock to %d ready", r)
	}
	h.delete(o1.GetSandboxId(), 0)
	h.waitStock(entry, 2)

	// The main process sees the sandbox's hostname, not the warm one.
	s := spec(`echo "hello $GREETING from $(pwd) on $(hostname)"; sleep 1000`)
	s.Envs = []*fsbv1.EnvVar{{Name: "GREETING", Value: "claim"}}
	s.WorkingDir = "/tmp"
	sb := h.create(s)
	if !sb.GetWarm() || !strings.HasPrefix(sb.GetContainerId(), runtime.WarmIDPrefix) {
		t.Fatalf("matching create was not served warm: %v", sb)
	}
	want := "hello claim from /tmp on " + sb.GetName()
	h.waitLog(sb, want)
	if got := logTexts(t, sb.GetLogPath()); len(got) != 1 || got[0] != want {
		t.Fatalf("the claimed sandbox's log holds %q, want only %q", got, want)
	}
	if !strings.HasSuffix(sb.GetLogPath(), "/default/"+sb.GetName()+"/"+sb.GetSandboxId()+"-1.log") {
		t.Fatalf("log path %s is not the sandbox's", sb.GetLogPath())
	}
	if got := h.sh(sb.GetSandboxId(), "echo $GREETING; cat /proc/1/comm; hostname"); got != "claim\nfsb-init\n"+sb.GetName()+"\n" {
		t.Fatalf("exec in the claimed sandbox printed %q", got)
	}
	// A retried create answers the claimed sandbox.
	again, err := h.client.CreateSandbox(context.Background(), connect.NewRequest(&fsbv1.AgentServiceCreateSandboxRequest{
		SandboxId: sb.GetSandboxId(), Revision: 1, Namespace: "default", Name: sb.GetName(), Spec: s}))
	if err != nil || again.Msg.GetSandbox().GetContainerId() != sb.GetContainerId() {
		t.Fatalf("retried create: %v, %v; want container %s", again, err, sb.GetContainerId())
	}
	h.waitStock(entry, 2)
	h.delete(sb.GetSandboxId(), 1)
	h.assertGone(sb)
	h.waitStock(entry, 2)
	// Misses: the create before any stock and the one of another kind.
	if m := h.metrics(); !strings.Contains(m, `fsb_agent_warm_claims_total{result="hit"} 1`) || !strings.Contains(m, `fsb_agent_warm_claims_total{result="miss"} 2`) {
		t.Fatalf("warm claim metrics wrong:\n%s", grepLines(m, "fsb_agent_warm"))
	}
	// Targets dropped: the warm sandboxes go.
	h.setWarm()
	deadline := time.Now().Add(30 * time.Second)
	for h.warmContainers() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d warm containers left after their target was dropped", h.warmContainers())
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.delete(cold.GetSandboxId(), 0)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestWarmColdCreateTakesAWarmSlotWhenFull(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withCapacity(2))
	entry := warmEntry(2)
	h.setWarm(entry)
	h.waitStock(entry, 2)
	other := spec("sleep 1000")
	other.Resources = &fsbv1.Resources{Pids: 100}
	sb := h.create(other)
	if sb.GetWarm() {
		t.Fatalf("a create of another kind was served warm")
	}
	if n := h.warmContainers(); n != 1 {
		t.Fatalf("%d warm containers beside a sandbox at capacity 2, want 1", n)
	}
}

// pauseRefill stops the agent from making or removing warm sandboxes, as
// an agent before its first SetWarm does.
func (h *harness) pauseRefill() {
	h.agent.warm.mu.Lock()
	h.agent.warm.targets, h.agent.warm.set = map[string]*fsbv1.WarmEntry{}, false
	h.agent.warm.mu.Unlock()
}

func TestWarmConcurrentClaimsTakeEachWarmSandboxOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withCapacity(25))
	entry := warmEntry(5)
	h.setWarm(entry)
	h.waitStock(entry, 5)
	h.pauseRefill()
	var wg sync.WaitGroup
	sbs := make([]*fsbv1.AgentSandbox, 20)
	errs := make([]error, 20)
	for i := range sbs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sbs[i], errs[i] = h.tryCreate(spec("echo started; sleep 1000"))
		}()
	}
	wg.Wait()
	hits, containers := 0, map[string]bool{}
	for i, sb := range sbs {
		if errs[i] != nil {
			t.Fatalf("create %d: %v", i, errs[i])
		}
		if sb.GetWarm() {
			hits++
		}
		if containers[sb.GetContainerId()] {
			t.Fatalf("container %s serves two creates", sb.GetContainerId())
		}
		containers[sb.GetContainerId()] = true
	}
	if hits != 5 {
		t.Fatalf("%d warm hits from 5 warm sandboxes, want 5", hits)
	}
	for _, sb := range sbs {
		h.waitPhase(sb.GetSandboxId(), fsbv1.Phase_PHASE_RUNNING)
		h.waitLog(sb, "started")
		if got := logTexts(t, sb.GetLogPath()); len(got) != 1 {
			t.Fatalf("sandbox %s's log holds %q, want one line", sb.GetSandboxId(), got)
		}
	}
}

// TestWarmClaimCutShortIsFinished leaves a claim as an agent killed at
// some point of it leaves it: the claim journal written, then the relabel
// landed or not, and init's main process started or not (the claim runs
// the two side by side). The next agent must finish it from the journal:
// the container is the sandbox, its main process started exactly once.
func TestWarmClaimCutShortIsFinished(t *testing.T) {
	t.Parallel()
	for _, mainStarted := range []bool{false, true} {
		for _, relabelled := range []bool{false, true} {
			t.Run(fmt.Sprintf("mainStarted=%v,relabelled=%v", mainStarted, relabelled), func(t *testing.T) {
				t.Parallel()
				testClaimCutShort(t, mainStarted, relabelled)
			})
		}
	}
}

func testClaimCutShort(t *testing.T, mainStarted, relabelled bool) {
	h := newHarness(t)
	entry := warmEntry(1)
	h.setWarm(entry)
	h.waitStock(entry, 1)
	h.pauseRefill()
	warm := h.rt.WarmSandboxes()
	if len(warm) != 1 {
		t.Fatalf("%d warm sandboxes, want 1", len(warm))
	}
	cid := warm[0].ContainerID
	s := spec("echo main-started; sleep 1000")
	id := h.newID()
	logPath := filepath.Join(h.logDir, "default", "test-"+id, id+"-1.log")
	ctx := context.Background()
	// What the claim makes of the container, as its journal holds it.
	labels := map[string]string{
		runtime.LabelID: id, runtime.LabelRevision: "1", runtime.LabelNamespace: "default", runtime.LabelName: "test-" + id,
		runtime.LabelAgent: h.agentID, runtime.LabelClaimed: "true", runtime.LabelStarted: "true", runtime.LabelLogPath: logPath,
		runtime.LabelMainStarted: "true",
	}
	specBytes, err := proto.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	journal, err := json.Marshal(map[string]any{"agent": h.agentID, "containerID": cid, "labels": labels, "spec": specBytes})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.rcfg.LinkDir, runtime.LinkDirName(cid)+".claim"), journal, 0o600); err != nil {
		t.Fatal(err)
	}
	if mainStarted {
		if err := logfile.SwitchLog(ctx, filepath.Join(h.rcfg.LinkDir, runtime.LinkDirName(cid)+".l"), logfile.DriverConfig{Path: logPath}); err != nil {
			t.Fatalf("switch log: %v", err)
		}
		link, ok := h.rt.Link(cid)
		if !ok {
			t.Fatal("no link to the warm sandbox's init")
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := link.Call(cctx, initlink.Request{Op: initlink.OpStartMain, Process: &initlink.Process{Args: s.GetCommand(), Dir: "/"}})
		cancel()
		if err != nil {
			t.Fatalf("start main: %v", err)
		}
	}
	h.restart(func() {
		if !relabelled {
			return
		}
		// The claim's one update, as the runtime makes it.
		ext, err := typeurl.MarshalAnyToProto(s)
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.cd.ContainerService().Update(ctx, containers.Container{ID: cid, Labels: labels,
			Extensions: map[string]typeurl.Any{runtime.ExtensionSpec: ext}}, "labels", "extensions")
		if err != nil {
			t.Fatalf("relabel: %v", err)
		}
	})
	got := h.waitPhase(id, fsbv1.Phase_PHASE_RUNNING)
	if !got.GetWarm() || got.GetContainerId() != cid {
		t.Fatalf("cut-short claim came back as %v", got)
	}
	h.waitLog(got, "main-started")
	// A retried create finds it and starts nothing more.
	resp, err := h.client.CreateSandbox(ctx, connect.NewRequest(&fsbv1.AgentServiceCreateSandboxRequest{
		SandboxId: id, Revision: 1, Namespace: "default", Name: "test-" + id, Spec: s}))
	if err != nil || resp.Msg.GetSandbox().GetContainerId() != cid {
		t.Fatalf("retried create: %v %v", resp, err)
	}
	time.Sleep(200 * time.Millisecond)
	if lines := logTexts(t, got.GetLogPath()); len(lines) != 1 || lines[0] != "main-started" {
		t.Fatalf("log holds %q: want the main process started exactly once", lines)
	}
	if procs := h.sh(id, "ps -o args | grep -c '^sleep 1000'"); procs != "1\n" {
		t.Fatalf("%q main processes run, want 1", procs)
	}
	if host := h.sh(id, "hostname"); host != "test-"+id+"\n" {
		t.Fatalf("the settled sandbox's hostname is %q, want its name", host)
	}
	if _, err := os.Stat(filepath.Join(h.rcfg.LinkDir, runtime.LinkDirName(cid)+".claim")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the claim journal is still there (%v)", err)
	}
}

// TestWarmRetriesDuringAClaimShareItsPorts sends one create twice at once
// (a retry while the first is under way): one may claim a warm sandbox and
// the other go cold, and neither may refuse the other's ports; both answer
// the one container.
func TestWarmRetriesDuringAClaimShareItsPorts(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withCapacity(6))
	entry := warmEntry(2)
	h.setWarm(entry)
	h.waitStock(entry, 2)
	for round := range 3 {
		id := h.newID()
		s := spec("sleep 1000")
		s.ExposedPorts = []int32{int32(18080 + round)}
		req := &fsbv1.AgentServiceCreateSandboxRequest{SandboxId: id, Revision: 1, Namespace: "default", Name: "test-" + id, Spec: s}
		var wg sync.WaitGroup
		cids := make([]string, 2)
		errs := make([]error, 2)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := h.client.CreateSandbox(context.Background(), connect.NewRequest(req))
				if errs[i] = err; err == nil {
					cids[i] = resp.Msg.GetSandbox().GetContainerId()
				}
			}()
		}
		wg.Wait()
		if errs[0] != nil || errs[1] != nil || cids[0] != cids[1] {
			t.Fatalf("round %d: one create sent twice gave %q, %v", round, cids, errs)
		}
		h.delete(id, 0)
		h.waitStock(entry, 2)
	}
}
