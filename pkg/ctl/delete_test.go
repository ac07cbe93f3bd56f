package ctl

import (
	"context"
	"strings"
	"testing"
	"time"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

func TestDelete(t *testing.T) {
	f := newFake()
	f.add("default", "a", "busybox", time.Minute)
	f.add("default", "b", "busybox", time.Minute)
	c, out, _ := client(t, serve(t, f), testToken, "")
	if err := c.Delete(context.Background(), DeleteOptions{Names: []string{"a", "b"}}); err != nil {
		t.Fatal(err)
	}
	if out.String() != "sandbox a deleted\nsandbox b deleted\n" {
		t.Errorf("output %q", out)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.sandboxes) != 0 {
		t.Errorf("%d sandboxes left", len(f.sandboxes))
	}
	for _, req := range f.deletes {
		if req.GracePeriodSeconds != nil || req.GetNoWait() || req.GetNamespace() != "default" {
			t.Errorf("request %v, want the defaults in namespace default", req)
		}
	}
}

func TestDeleteOptions(t *testing.T) {
	f := newFake()
	f.add("team", "a", "busybox", time.Minute)
	c, out, _ := client(t, serve(t, f), testToken, "team")
	grace := int32(0)
	if err := c.Delete(context.Background(), DeleteOptions{Names: []string{"a"}, GracePeriod: &grace, NoWait: true}); err != nil {
		t.Fatal(err)
	}
	if out.String() != "sandbox a is being deleted\n" {
		t.Errorf("output %q", out)
	}
	f.mu.Lock()
	req := f.deletes[0]
	f.mu.Unlock()
	if req.GracePeriodSeconds == nil || req.GetGracePeriodSeconds() != 0 || !req.GetNoWait() {
		t.Errorf("request %v, want grace period 0 (set) and no_wait", req)
	}
}

func TestDeleteGoesOnPastFailures(t *testing.T) {
	f := newFake()
	f.add("default", "a", "busybox", time.Minute)
	f.add("default", "c", "busybox", time.Minute)
	c, out, errw := client(t, serve(t, f), testToken, "")
	err := c.Delete(context.Background(), DeleteOptions{Names: []string{"a", "ghost", "c"}})
	if err == nil || err.Error() != "1 of 3 sandboxes not deleted" {
		t.Errorf("err = %v", err)
	}
	if out.String() != "sandbox a deleted\nsandbox c deleted\n" {
		t.Errorf("stdout %q", out)
	}
	if errw.String() != "error: sandbox ghost not found in namespace default\n" {
		t.Errorf("stderr %q", errw)
	}

	// One name: its error is the error.
	err = c.Delete(context.Background(), DeleteOptions{Names: []string{"ghost"}})
	if err == nil || err.Error() != "sandbox ghost not found in namespace default" {
		t.Errorf("err = %v", err)
	}
	// --ignore-not-found: what is gone is deleted.
	if err := c.Delete(context.Background(), DeleteOptions{Names: []string{"ghost"}, IgnoreNotFound: true}); err != nil {
		t.Errorf("with IgnoreNotFound: %v", err)
	}
}

func TestDeleteUsage(t *testing.T) {
	c, _, _ := client(t, serve(t, newFake()), testToken, "")
	neg := int32(-1)
	for _, o := range []DeleteOptions{{}, {Names: []string{"a"}, GracePeriod: &neg}, {Names: []string{"a"}, Timeout: -time.Second}} {
		if err := c.Delete(context.Background(), o); !IsUsage(err) {
			t.Errorf("Delete(%+v) = %v, want a usage error", o, err)
		}
	}
}

// TestAgentsConflict checks that an agent ID two addresses report is named
// with both, on stderr, and the table keeps its columns.
func TestAgentsConflict(t *testing.T) {
	f := newFake()
	f.agents = []*fsbv1.AgentStatus{{
		AgentId: "twin", AdvertiseAddress: "10.0.0.1", NodeName: "node-a", Capacity: 4,
		ConflictingAddresses: []string{"10.0.0.1:5758", "10.0.0.2:5758"},
	}, {
		AgentId: "triplet", AdvertiseAddress: "10.0.0.3", Capacity: 4,
		ConflictingAddresses: []string{"10.0.0.3:5758", "10.0.0.4:5758", "10.0.0.5:5758"},
	}, {
		AgentId: "single", AdvertiseAddress: "10.0.0.6", Capacity: 4,
	}}
	c, out, errw := client(t, serve(t, f), testToken, "")
	if err := c.Agents(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	want := "agent triplet is reported by 10.0.0.3:5758, 10.0.0.4:5758 and 10.0.0.5:5758: it gets no new sandboxes until only one address reports it\n" +
		"agent twin is reported by 10.0.0.1:5758 and 10.0.0.2:5758: it gets no new sandboxes until only one address reports it\n"
	if errw.String() != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", errw, want)
	}
	for i, row := range fields(out.String()) {
		if len(row) != 8 {
			t.Errorf("row %d has %d columns, want 8:\n%s", i, len(row), out)
		}
	}

	out.buf.Reset()
	if err := c.Agents(context.Background(), OutputJSON); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"conflictingAddresses": [`) {
		t.Errorf("JSON lacks conflictingAddresses:\n%s", out)
	}
}

func TestAgents(t *testing.T) {
	f := newFake()
	f.agents = []*fsbv1.AgentStatus{{
		AgentId: "node-b-agent", AdvertiseAddress: "10.0.0.2", NodeName: "node-b", Capacity: 5,
		Runtimes: []string{"runc"}, Images: []string{"busybox"},
	}, {
		AgentId: "local", AdvertiseAddress: "127.0.0.1", NodeName: "node-a", Capacity: 5,
		Sandboxes: []*fsbv1.AgentSandbox{{SandboxId: "sb-1"}, {SandboxId: "sb-2"}},
		Runtimes:  []string{"runc", "crun", "gvisor"}, Images: []string{"busybox", "alpine", "nginx"},
	}, {
		AgentId: "pool-gpu-1", AdvertiseAddress: "10.0.0.3", NodeName: "node-c", Capacity: 2, Pool: "gpu",
		Runtimes: []string{"gvisor"}, Cordoned: true,
	}, {
		AgentId: "pool-gpu-2", AdvertiseAddress: "10.0.0.4", NodeName: "node-c", Capacity: 2, Pool: "gpu",
		Runtimes: []string{"gvisor"}, ConflictingAddresses: []string{"10.0.0.4:5758", "10.0.0.5:5758"},
	}}
	c, out, _ := client(t, serve(t, f), testToken, "")
	if err := c.Agents(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"ID", "POOL", "STATE", "ADDRESS", "NODE", "SANDBOXES", "RUNTIMES", "IMAGES"},
		{"local", "-", "-", "127.0.0.1", "node-a", "2/5", "runc,crun,gvisor", "3"},
		{"node-b-agent", "-", "-", "10.0.0.2", "node-b", "0/5", "runc", "1"},
		{"pool-gpu-1", "gpu", "cordoned", "10.0.0.3", "node-c", "0/2", "gvisor", "0"},
		{"pool-gpu-2", "gpu", "conflict", "10.0.0.4", "node-c", "0/2", "gvisor", "0"},
	}
	got := fields(out.String())
	if len(got) != len(want) {
		t.Fatalf("table:\n%s", out)
	}
	for i := range want {
		if strings.Join(got[i], " ") != strings.Join(want[i], " ") {
			t.Errorf("row %d = %q, want %q", i, got[i], want[i])
		}
	}

	out.buf.Reset()
	if err := c.Agents(context.Background(), OutputJSON); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"agentId": "local"`) || !strings.HasPrefix(out.String(), "{\n  \"items\": [") {
		t.Errorf("JSON:\n%s", out)
	}
	for _, want := range []string{`"pool": "gpu"`, `"cordoned": true`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("JSON lacks %s:\n%s", want, out)
		}
	}
}

// TestDeleteTimeout checks what `delete --timeout` says once the deadline
// passes: a deletion the controller recorded goes on in the background
// (exit 0, a note on stderr with what it waits for); one it did not record
// failed.
func TestDeleteTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	const waiting = "waiting for agent local: containerd unavailable"
	tests := []struct {
		name             string
		stall            deleteStall
		wantOut, wantErr string
		// fail is the error, "" for none.
		fail string
	}{{
		name:    "recorded, the call held past the deadline",
		stall:   deleteStall{record: true, message: waiting},
		wantErr: "sandbox s is still being deleted: the delete goes on in the background (check with fsb ctl get s)\n  status: " + waiting + "\n",
	}, {
		name:    "recorded, the controller's own wait ran out",
		stall:   deleteStall{record: true, answer: true},
		wantErr: "sandbox s is still being deleted: the delete goes on in the background (check with fsb ctl get s)\n",
	}, {
		name:    "finished, the answer too late",
		stall:   deleteStall{finish: true},
		wantOut: "sandbox s deleted\n",
	}, {
		name:  "not recorded",
		stall: deleteStall{},
		fail:  "sandbox s was not deleted within 300ms, and the controller does not show it as being deleted (phase Running): run fsb ctl delete s again, perhaps with a longer --timeout",
	}, {
		name:  "not recorded, the controller answered DeadlineExceeded",
		stall: deleteStall{answer: true},
		fail:  "sandbox s was not deleted within 300ms, and the controller does not show it as being deleted (phase Running): run fsb ctl delete s again",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			f.add("default", "s", "busybox", time.Minute)
			f.stalls = map[string]deleteStall{"s": tt.stall}
			c, out, errw := client(t, serve(t, f), testToken, "")
			start := time.Now()
			err := c.Delete(context.Background(), DeleteOptions{Names: []string{"s"}, Timeout: timeout})
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("delete took %v with --timeout %v", took, timeout)
			}
			switch {
			case tt.fail == "" && err != nil:
				t.Errorf("err = %v, want none", err)
			case tt.fail != "" && (err == nil || IsUsage(err) || !strings.HasPrefix(err.Error(), tt.fail)):
				t.Errorf("err = %v, want %q (exit status 1)", err, tt.fail)
			}
			if out.String() != tt.wantOut || errw.String() != tt.wantErr {
				t.Errorf("stdout %q stderr %q, want %q and %q", out, errw, tt.wantOut, tt.wantErr)
			}
		})
	}
}

// TestDeleteTimeoutOfSeveral checks that the deadline is per sandbox and a
// delete that did not take counts as a failure among others.
func TestDeleteTimeoutOfSeveral(t *testing.T) {
	f := newFake()
	for _, name := range []string{"a", "stuck", "slow", "c"} {
		f.add("default", name, "busybox", time.Minute)
	}
	f.stalls = map[string]deleteStall{"stuck": {}, "slow": {record: true}}
	c, out, errw := client(t, serve(t, f), testToken, "")
	err := c.Delete(context.Background(), DeleteOptions{Names: []string{"a", "stuck", "slow", "c"}, Timeout: 200 * time.Millisecond})
	if err == nil || err.Error() != "1 of 4 sandboxes not deleted" {
		t.Errorf("err = %v", err)
	}
	if out.String() != "sandbox a deleted\nsandbox c deleted\n" {
		t.Errorf("stdout %q", out)
	}
	for _, want := range []string{"error: sandbox stuck was not deleted within 200ms", "sandbox slow is still being deleted"} {
		if !strings.Contains(errw.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errw)
		}
	}
}
