//go:build !fsbhelper

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// tryCall is agentProc.call for goroutines and for an agent that may be
// dead: a transport error comes back rather than failing the test.
func (a *agentProc) tryCall(method string, body any) (int, map[string]any, error) {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, a.base+"/fsb.v1.AgentService/"+method, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	err = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out, err
}

// warmReady returns the agent's ready warm sandboxes of kind key.
func (a *agentProc) warmReady(key string) int {
	a.t.Helper()
	code, out := a.call("GetStatus", a.token, map[string]any{})
	if code != http.StatusOK {
		a.t.Fatalf("GetStatus: HTTP %d %v", code, out)
	}
	list, _ := out["status"].(map[string]any)["warm"].([]any)
	for _, s := range list {
		st := s.(map[string]any)
		if st["key"] == key {
			n, _ := st["ready"].(float64)
			return int(n)
		}
	}
	return 0
}

// TestWarmAgentKill9DuringClaimStorm kills the agent process with SIGKILL
// while concurrent creates claim its warm sandboxes, starts it again, and
// retries every create as the controller would: every sandbox then runs in
// one container of its own, no warm sandbox serves two creates, and each
// main process started exactly once (its one line in the sandbox's log).
func TestWarmAgentKill9DuringClaimStorm(t *testing.T) {
	client, ns := rig.Containerd(t)
	dir := t.TempDir()
	const id = "warm-storm-agent"
	a := startAgent(t, ns, id, dir, "--capacity", "40")
	entry := &fsbv1.WarmEntry{Image: rig.ImageRef, Count: 8}
	key, _ := v1alpha1.WarmEntryKey(entry)
	setWarm := func(a *agentProc) {
		code, out := a.call("SetWarm", a.token, map[string]any{"targets": []any{map[string]any{
			"key": key, "entry": map[string]any{"image": entry.GetImage(), "count": entry.GetCount()}}}})
		if code != http.StatusOK {
			t.Fatalf("SetWarm: HTTP %d %v", code, out)
		}
	}
	setWarm(a)
	deadline := time.Now().Add(60 * time.Second)
	for a.warmReady(key) < int(entry.GetCount()) {
		if time.Now().After(deadline) {
			t.Fatalf("warm stock never reached %d; agent log:\n%s", entry.GetCount(), a.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}

	const n = 16
	body := func(i int) map[string]any {
		sid := fmt.Sprintf("storm-%d", i)
		return map[string]any{"sandboxId": sid, "revision": 1, "namespace": "default", "name": sid,
			"spec": map[string]any{"image": rig.ImageRef, "command": []string{"sh", "-c", "echo start-" + sid + "; sleep 1000"}}}
	}
	acked := make([]bool, n)
	answered := make(chan struct{}, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _, err := a.tryCall("CreateSandbox", body(i))
			if err == nil && code == http.StatusOK {
				acked[i] = true
				answered <- struct{}{}
			}
		}()
	}
	// Killed once a few creates were answered: the others are under way.
	select {
	case <-answered:
		<-answered
	case <-time.After(30 * time.Second):
	}
	a.kill()
	wg.Wait()
	ackedBefore := 0
	for _, ok := range acked {
		if ok {
			ackedBefore++
		}
	}
	t.Logf("%d of %d creates answered before the kill", ackedBefore, n)

	a = restartAgent(t, a, ns, id, dir, "--capacity", "40")
	// The controller retries every create it has no answer for, and may
	// retry answered ones too: both must find the same sandbox.
	for i := range n {
		code, out, err := a.tryCall("CreateSandbox", body(i))
		if err != nil || code != http.StatusOK {
			t.Fatalf("retried create %d: HTTP %d %v %v\nagent log:\n%s", i, code, out, err, a.stderr)
		}
	}
	sbs := a.sandboxes()
	containers := map[string]string{}
	for i := range n {
		sid := fmt.Sprintf("storm-%d", i)
		sb, ok := sbs[sid]
		if !ok {
			t.Fatalf("sandbox %s is gone after the restart", sid)
		}
		cid := sb["containerId"].(string)
		if other, dup := containers[cid]; dup {
			t.Fatalf("container %s serves %s and %s", cid, other, sid)
		}
		containers[cid] = sid
		path := sb["logPath"].(string)
		var log string
		for end := time.Now().Add(20 * time.Second); ; {
			b, _ := os.ReadFile(path)
			if log = string(b); strings.Contains(log, "start-"+sid) || time.Now().After(end) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if c := strings.Count(log, "start-"+sid+"\n"); c != 1 {
			t.Fatalf("sandbox %s's main process started %d times; log:\n%s", sid, c, log)
		}
	}
	// One container per sandbox revision on containerd, whatever the agent
	// reports.
	cs, err := client.Containers(context.Background(), fmt.Sprintf("labels.%q", runtime.LabelID))
	if err != nil {
		t.Fatal(err)
	}
	per := map[string]int{}
	for _, c := range cs {
		labels, err := c.Labels(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		per[labels[runtime.LabelID]]++
	}
	for sid, c := range per {
		if c != 1 {
			t.Fatalf("sandbox %s has %d containers", sid, c)
		}
	}
	if len(per) != n {
		t.Fatalf("%d sandboxes' containers on containerd, want %d", len(per), n)
	}
	// Warm hits happened (the stock was there): the storm tested claims.
	hits := 0
	for _, sb := range sbs {
		if w, _ := sb["warm"].(bool); w {
			hits++
		}
	}
	if hits == 0 {
		t.Fatalf("no create was served warm")
	}
	t.Logf("%d sandboxes claimed warm", hits)
}
