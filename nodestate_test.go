//go:build !fsbhelper

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd"
	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/snapshots"

	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// nodeState is what one containerd namespace and the host hold for its
// sandboxes, read straight from containerd, /proc and the log dir rather
// than through fsb, so that a bug in fsb's own view cannot hide a leak.
type nodeState struct {
	// Containers and Tasks by container ID (a task's value is its status).
	Containers map[string]bool
	Tasks      map[string]containerd.ProcessStatus
	// Snapshots are the keys of the rig snapshotter's snapshots, active
	// ones only (an image's committed layers are not a sandbox's).
	Snapshots map[string]bool
	// Shims are the shim processes of this containerd and namespace, by
	// the container ID they serve (their -id).
	Shims map[string]int
	// Mounts are the root filesystems mounted under containerd's task
	// state for the namespace, by container ID.
	Mounts map[string]string
	// LogFiles are the files under the log dir, relative to it (the
	// agent's lock file aside).
	LogFiles []string
}

// readNodeState reads the node state of namespace ns on the containerd at
// socket; logDir may be empty.
func readNodeState(t testing.TB, socket, ns, logDir string) nodeState {
	t.Helper()
	client, err := containerd.New(socket, containerd.WithDefaultNamespace(ns), containerd.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatalf("node state: %v", err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := nodeState{
		Containers: map[string]bool{}, Tasks: map[string]containerd.ProcessStatus{},
		Snapshots: map[string]bool{}, Shims: map[string]int{}, Mounts: map[string]string{},
	}
	cs, err := client.Containers(ctx)
	if err != nil {
		t.Fatalf("node state: list containers: %v", err)
	}
	for _, c := range cs {
		s.Containers[c.ID()] = true
	}
	tasks, err := client.TaskService().List(ctx, &tasksapi.ListTasksRequest{})
	if err != nil {
		t.Fatalf("node state: list tasks: %v", err)
	}
	for _, task := range tasks.Tasks {
		s.Tasks[task.ID] = containerd.ProcessStatus(strings.ToLower(strings.TrimPrefix(task.Status.String(), "STATUS_")))
	}
	err = client.SnapshotService(rig.Snapshotter).Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind == snapshots.KindActive {
			s.Snapshots[info.Name] = true
		}
		return nil
	})
	if err != nil {
		t.Fatalf("node state: list snapshots: %v", err)
	}
	s.Shims = shimsOf(t, socket, ns)
	s.Mounts = taskMounts(t, ns)
	if logDir != "" {
		err := filepath.WalkDir(logDir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if os.IsNotExist(err) {
					return nil
				}
				return err
			}
			if !d.IsDir() && d.Name() != ".fsb-agent.lock" {
				rel, _ := filepath.Rel(logDir, path)
				s.LogFiles = append(s.LogFiles, rel)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("node state: log files: %v", err)
		}
	}
	return s
}

// shimsOf finds the shim processes serving namespace ns of the containerd at
// socket, by the container ID each serves.
func shimsOf(t testing.TB, socket, ns string) map[string]int {
	t.Helper()
	out := map[string]int{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("node state: %v", err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue // gone, or a kernel thread
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		flags := map[string]string{}
		for i := 1; i+1 < len(args); i++ {
			if strings.HasPrefix(args[i], "-") {
				flags[strings.TrimLeft(args[i], "-")] = args[i+1]
			}
		}
		if flags["namespace"] == ns && flags["address"] == socket {
			out[flags["id"]] = pid
		}
	}
	return out
}

// taskMounts finds the mounts under any containerd's task state for
// namespace ns (test namespaces are unique to their test), by container ID.
func taskMounts(t testing.TB, ns string) map[string]string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatalf("node state: %v", err)
	}
	marker := "/io.containerd.runtime.v2.task/" + ns + "/"
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		point := fields[4]
		i := strings.Index(point, marker)
		if i < 0 {
			continue
		}
		id, _, _ := strings.Cut(point[i+len(marker):], "/")
		out[id] = point
	}
	return out
}

// leftovers lists what the state holds without its container: tasks,
// snapshots (keyed by container ID, as the agent makes them), shims and
// mounts. Empty means nothing is left behind.
func (s nodeState) leftovers() []string {
	var out []string
	for id := range s.Tasks {
		if !s.Containers[id] {
			out = append(out, "task "+id)
		}
	}
	for key := range s.Snapshots {
		if !s.Containers[key] {
			out = append(out, "snapshot "+key)
		}
	}
	for id, pid := range s.Shims {
		if _, ok := s.Tasks[id]; !ok {
			out = append(out, fmt.Sprintf("shim %s (pid %d) without a task", id, pid))
		}
	}
	for id, point := range s.Mounts {
		if _, ok := s.Tasks[id]; !ok {
			out = append(out, fmt.Sprintf("mount %s without a task", point))
		}
	}
	slices.Sort(out)
	return out
}

// count is how many sandbox containers, tasks, snapshots, shims, mounts
// and log files the state holds, for a line in a test's log.
func (s nodeState) count() string {
	return fmt.Sprintf("%d containers, %d tasks, %d snapshots, %d shims, %d mounts, %d log files",
		len(s.Containers), len(s.Tasks), len(s.Snapshots), len(s.Shims), len(s.Mounts), len(s.LogFiles))
}

// TestNodeStateSeesALeftover checks the checker: a snapshot prepared
// without its container and a task whose container is being removed show
// up as leftovers, and a sandbox container with its task, snapshot, shim
// and mount does not.
func TestNodeStateSeesALeftover(t *testing.T) {
	client, ns := rig.Containerd(t)
	socket := rig.Env(t, rig.EnvSocket)
	ctx := context.Background()
	img, err := client.GetImage(ctx, rig.ImageRef)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.NewContainer(ctx, "whole",
		containerd.WithSnapshotter(rig.Snapshotter), containerd.WithNewSnapshot("whole", img),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("sleep", "300")))
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	s := readNodeState(t, socket, ns, "")
	if got := s.leftovers(); len(got) != 0 {
		t.Errorf("a whole sandbox: leftovers %v", got)
	}
	if s.Shims["whole"] == 0 || s.Mounts["whole"] == "" || !s.Snapshots["whole"] {
		t.Errorf("a whole sandbox: %s; shims %v, mounts %v", s.count(), s.Shims, s.Mounts)
	}
	parent, err := client.SnapshotService(rig.Snapshotter).Stat(ctx, "whole")
	if err != nil {
		t.Fatal(err)
	}
	// Under a lease: containerd's garbage collector, run after any delete
	// (other tests', in parallel), removes a snapshot nothing references.
	leased, done, err := client.WithLease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer done(ctx)
	if _, err := client.SnapshotService(rig.Snapshotter).Prepare(leased, "stray", parent.Parent); err != nil {
		t.Fatal(err)
	}
	if got := readNodeState(t, socket, ns, "").leftovers(); !slices.Equal(got, []string{"snapshot stray"}) {
		t.Errorf("a snapshot without its container: leftovers %v", got)
	}
	if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil {
		t.Fatal(err)
	}
}
