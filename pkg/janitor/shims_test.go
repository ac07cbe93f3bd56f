package janitor

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"

	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// startShim starts a real runc shim daemon for task id of containerd
// namespace ns, the way containerd does before it registers a task, in a
// bundle of its own, and returns it as listShims sees it. containerd never
// hears of the task: this is the shim a create or delete cut short leaves.
// The test's end kills it if it still runs and removes its socket.
func startShim(t *testing.T, ns, id, address string) shimProc {
	t.Helper()
	return startShimIn(t, t.TempDir(), ns, id, address)
}

// startShimIn is startShim in a bundle dir that exists already.
func startShimIn(t *testing.T, bundle, ns, id, address string) shimProc {
	t.Helper()
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{"ociVersion":"1.0.2"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// The shim writes its own log into the bundle's "log" FIFO, as
	// containerd's reader drains it; with no reader it exits at once.
	if err := syscall.Mkfifo(filepath.Join(bundle, "log"), 0o600); err != nil {
		t.Fatal(err)
	}
	logFIFO, err := os.OpenFile(filepath.Join(bundle, "log"), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("containerd-shim-runc-v2", "-namespace", ns, "-id", id, "-address", address,
		"-publish-binary", "containerd", "start")
	cmd.Dir = bundle
	cmd.Env = append(os.Environ(), "TTRPC_ADDRESS="+address+".ttrpc")
	out, err := cmd.Output()
	if err != nil {
		logFIFO.Close()
		t.Fatalf("start shim for %s: %v: %s", id, err, out)
	}
	socket := strings.TrimPrefix(strings.TrimSpace(string(out)), "unix://")
	var found shimProc
	deadline := time.Now().Add(5 * time.Second)
	for found.pid == 0 {
		shims, err := listShims(procRoot)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range shims {
			if s.namespace == ns && s.id == id {
				found = s
			}
		}
		if found.pid == 0 && time.Now().After(deadline) {
			t.Fatalf("shim for %s started but not listed", id)
		}
	}
	t.Cleanup(func() {
		if found.alive(procRoot) {
			syscall.Kill(found.pid, syscall.SIGKILL)
		}
		os.Remove(socket)
		logFIFO.Close()
	})
	if found.socket != socket || found.bundle != bundle {
		t.Fatalf("shim listed with socket %q bundle %q, want %q and %q", found.socket, found.bundle, socket, bundle)
	}
	return found
}

// TestFindShims checks that a shim whose task containerd does not have is
// found and killed, with its socket removed, and that neither a running
// sandbox's shim nor a shim of another containerd is returned.
func TestFindShims(t *testing.T) {
	client, ns := rig.Containerd(t)
	sock := rig.Env(t, rig.EnvSocket)
	live := runSandbox(t, client, ns, "live-1", "agent-b", true)
	orphan := startShim(t, ns, "gone-2", sock)
	other := startShim(t, ns, "gone-3", filepath.Join(t.TempDir(), "other-containerd.sock"))

	// The same socket spelled as containerd's clients may.
	for _, address := range []string{sock, "unix://" + sock} {
		found, err := findShims(t.Context(), client, ns, address)
		if err != nil {
			t.Fatal(err)
		}
		if len(found) != 1 || found[0].Name != "pid "+itoa(orphan.pid) {
			t.Fatalf("address %s: found %v, want only the shim of gone-2 (pid %d)", address, byName(found), orphan.pid)
		}
		l := found[0]
		if l.Kind != KindShim || l.Namespace != ns || l.SandboxID != "gone" || l.Revision != 2 {
			t.Errorf("leftover %+v: want kind shim, namespace %s, sandbox gone revision 2", l, ns)
		}
		recent(t, "shim", l.Created)
	}

	found, err := findShims(t.Context(), client, ns, sock)
	if err != nil || len(found) != 1 {
		t.Fatalf("found %v, %v", byName(found), err)
	}
	if err := found[0].Remove(t.Context()); err != nil {
		t.Fatal(err)
	}
	if orphan.alive(procRoot) {
		t.Error("the shim of gone-2 still runs after Remove")
	}
	if _, err := os.Lstat(orphan.socket); !os.IsNotExist(err) {
		t.Errorf("socket %s of the removed shim: %v, want it gone", orphan.socket, err)
	}
	if err := found[0].Remove(t.Context()); err != nil {
		t.Errorf("Remove of a shim already gone: %v", err)
	}
	if !other.alive(procRoot) {
		t.Error("the shim of another containerd was killed")
	}
	reused := other
	reused.startTicks++ // the same PID, another process
	if reused.alive(procRoot) {
		t.Error("a process that started at another time counts as the shim")
	}
	ctx := namespaces.WithNamespace(t.Context(), ns)
	task, err := live.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := task.Status(ctx); err != nil || st.Status != containerd.Running {
		t.Errorf("the running sandbox's task: %v, %v; want running", st.Status, err)
	}
}

// TestParseShimArgs checks which command lines count as a shim daemon's.
func TestParseShimArgs(t *testing.T) {
	for _, tc := range []struct {
		name, cmdline string
		want          shimProc
		ok            bool
	}{
		{"daemon", "/usr/bin/containerd-shim-runc-v2\x00-namespace\x00fsb\x00-id\x00sb-1\x00-address\x00/run/c.sock\x00",
			shimProc{namespace: "fsb", id: "sb-1", address: "/run/c.sock"}, true},
		{"flags with = and debug", "containerd-shim-runc-v2\x00-namespace=fsb\x00-debug\x00--id=sb-1\x00-address\x00/run/c.sock",
			shimProc{namespace: "fsb", id: "sb-1", address: "/run/c.sock"}, true},
		{"start action", "containerd-shim-runc-v2\x00-namespace\x00fsb\x00-id\x00sb-1\x00-address\x00/run/c.sock\x00start\x00", shimProc{}, false},
		{"delete action", "containerd-shim-runc-v2\x00-namespace\x00fsb\x00-id\x00sb-1\x00-address\x00/run/c.sock\x00delete\x00", shimProc{}, false},
		{"no id", "containerd-shim-runc-v2\x00-namespace\x00fsb\x00-address\x00/run/c.sock\x00", shimProc{}, false},
		{"flag without value", "containerd-shim-runc-v2\x00-namespace\x00fsb\x00-id\x00sb-1\x00-address", shimProc{}, false},
		{"another program", "/bin/sleep\x00-namespace\x00fsb\x00-id\x00sb-1\x00-address\x00/run/c.sock\x00", shimProc{}, false},
		{"kernel thread", "", shimProc{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseShimArgs([]byte(tc.cmdline))
			if got != tc.want || ok != tc.ok {
				t.Errorf("parseShimArgs = %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestParseStat checks the state and start time read from a process's stat
// line, whose command name may hold spaces and parentheses.
func TestParseStat(t *testing.T) {
	tail := " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 20\n"
	for _, tc := range []struct {
		name, stat string
		state      byte
		ticks      uint64
		ok         bool
	}{
		{"plain", "123 (containerd-shim) S" + tail, 'S', 4242, true},
		{"name with ) and spaces", "123 (a) b (c) Z" + tail, 'Z', 4242, true},
		{"truncated", "123 (x) S 1 2 3", 0, 0, false},
		{"no name", "123 x S" + tail, 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state, ticks, err := parseStat([]byte(tc.stat))
			if (err == nil) != tc.ok || state != tc.state || ticks != tc.ticks {
				t.Errorf("parseStat = %c, %d, %v; want %c, %d, ok %v", state, ticks, err, tc.state, tc.ticks, tc.ok)
			}
		})
	}
}
