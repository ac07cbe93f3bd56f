package rig_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/runtime/v2/runc/options"

	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// newContainer creates container id from the test image with the given
// runtime binary and command.
func newContainer(t *testing.T, client *containerd.Client, ns, id, binary string, args ...string) containerd.Container {
	t.Helper()
	ctx := namespaces.WithNamespace(t.Context(), ns)
	img, err := client.GetImage(ctx, rig.ImageRef)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.NewContainer(ctx, id,
		containerd.WithImage(img),
		containerd.WithNewSnapshot(id, img),
		containerd.WithRuntime(rig.Runtime, &options.Options{BinaryName: binary}),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs(args...)),
	)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRuntimes runs `echo hi` under each runtime the rig provides, with the
// output written by the shim into a log file.
func TestRuntimes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		binary func(t *testing.T) string
	}{
		{"runc", func(*testing.T) string { return "runc" }},
		{"crun", func(*testing.T) string { return "crun" }},
		{"gvisor", func(t *testing.T) string { return rig.RunscWrapper(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			client, ns := rig.Containerd(t)
			ctx := namespaces.WithNamespace(t.Context(), ns)
			c := newContainer(t, client, ns, "echo", tc.binary(t), "echo", "hi")

			logPath := filepath.Join(t.TempDir(), "out.log")
			task, err := c.NewTask(ctx, cio.LogFile(logPath))
			if err != nil {
				t.Fatal(err)
			}
			exited, err := task.Wait(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := task.Start(ctx); err != nil {
				t.Fatal(err)
			}
			select {
			case st := <-exited:
				if code, _, err := st.Result(); err != nil || code != 0 {
					t.Fatalf("exit %d, %v", code, err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("echo did not exit within 30s")
			}
			out, err := os.ReadFile(logPath)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != "hi\n" {
				t.Fatalf("output %q, want %q", out, "hi\n")
			}
			// The task and container stay: the rig's cleanup removes them.
		})
	}
}

// TestCleanup checks that the namespace of a finished test is gone together
// with its running task, its container and the host state of both.
func TestCleanup(t *testing.T) {
	var ns string
	var pid uint32
	t.Run("work", func(t *testing.T) {
		var client *containerd.Client
		client, ns = rig.Containerd(t)
		ctx := namespaces.WithNamespace(t.Context(), ns)
		c := newContainer(t, client, ns, "sleeper", "runc", "sleep", "600")
		task, err := c.NewTask(ctx, cio.NullIO)
		if err != nil {
			t.Fatal(err)
		}
		if err := task.Start(ctx); err != nil {
			t.Fatal(err)
		}
		pid = task.Pid()
		newContainer(t, client, ns, "idle", "runc", "true")
	})
	if t.Failed() {
		return
	}

	client, err := containerd.New(rig.Env(t, rig.EnvSocket))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	all, err := client.NamespaceService().List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range all {
		if n == ns {
			t.Errorf("namespace %s still exists", ns)
		}
	}
	if err := syscall.Kill(int(pid), 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("task process %d still exists (kill -0: %v)", pid, err)
	}
	left, _ := filepath.Glob("/sys/fs/cgroup/*/" + ns)
	if _, err := os.Stat(filepath.Join("/run/containerd/runc", ns)); err == nil {
		left = append(left, filepath.Join("/run/containerd/runc", ns))
	}
	if len(left) > 0 {
		t.Errorf("left on the host: %s", strings.Join(left, " "))
	}
}
