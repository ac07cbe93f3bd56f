package runtime

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// A task create that containerd's death cuts short can leave the task's
// bundle directory (<state>/io.containerd.runtime.v2.task/<ns>/<id>)
// without a task or a shim. containerd 1.6 does not remove it when it
// starts again, and every later task of the container then fails with
// "failed to start shim: mkdir <bundle>: file exists": a STRONG create
// retried by the controller never ran, and held its slot for good.
// clearStaleBundle removes such a bundle so that the create can go on.

// clearStaleBundle removes the bundle that err (from a NewTask of container
// id in namespace ns) says is in the way, and reports whether it did. It
// removes only a directory named exactly as containerd names the bundle of
// that container, with nothing mounted in it and no process working in it
// (a shim runs in its bundle).
func (r *Runtime) clearStaleBundle(ns, id string, err error) bool {
	path, ok := staleBundlePath(ns, id, err)
	if !ok {
		return false
	}
	if busy, why := bundleInUse(path); busy {
		r.cfg.Logger.Warn("a task's bundle is in the way of a new task and in use; left as it is",
			slog.String("container", id), slog.String("bundle", path), slog.String("why", why))
		return false
	}
	if rerr := os.RemoveAll(path); rerr != nil {
		r.cfg.Logger.Warn("removing a task's stale bundle failed", slog.String("container", id), slog.String("bundle", path), slog.Any("err", rerr))
		return false
	}
	r.cfg.Logger.Info("removed the bundle a create cut short left without its task", slog.String("container", id), slog.String("bundle", path))
	return true
}

// staleBundlePath finds in err the bundle path of container id in
// namespace ns that a "mkdir ...: file exists" names.
func staleBundlePath(ns, id string, err error) (string, bool) {
	if err == nil {
		return "", false
	}
	// The shim's error crosses containerd's API as text: only its words
	// name the path.
	msg := err.Error()
	suffix := "/io.containerd.runtime.v2.task/" + ns + "/" + id
	start := strings.Index(msg, "mkdir /")
	if start < 0 {
		return "", false
	}
	rest := msg[start+len("mkdir "):]
	end := strings.Index(rest, suffix+": file exists")
	if end < 0 {
		return "", false
	}
	path := rest[:end+len(suffix)]
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return "", false
	}
	return path, true
}

// bundleInUse reports whether anything is mounted at or under path, or a
// process works in it, and says what.
func bundleInUse(path string) (bool, string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return true, fmt.Sprintf("cannot read the mounts: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		if p := fields[4]; p == path || strings.HasPrefix(p, path+"/") {
			return true, "mounted: " + p
		}
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return true, fmt.Sprintf("cannot list processes: %v", err)
	}
	for _, e := range procs {
		if cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd")); err == nil && (cwd == path || strings.HasPrefix(cwd, path+"/")) {
			return true, "process " + e.Name() + " works in it"
		}
	}
	return false, ""
}

// newTaskClearing runs newTask and, when a stale bundle of container id is
// in its way, removes that bundle and runs it once more.
func (r *Runtime) newTaskClearing(ctx context.Context, id string, newTask func() error) error {
	err := newTask()
	if err == nil {
		return nil
	}
	ns, nerr := r.namespace(ctx)
	if nerr != nil || !r.clearStaleBundle(ns, id, err) {
		return err
	}
	return newTask()
}
