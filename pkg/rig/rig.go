// Package rig connects integration tests to the project-local test rig that
// `make test` (or scripts/rig.sh) starts: one containerd, the busybox test
// image and the runtime wrappers. Each test gets its own containerd namespace,
// and everything it leaves there is removed when the test ends.
//
// A test that finds no rig fails with the command to run; it never skips.
package rig

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/defaults"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/plugin"
	"github.com/containerd/containerd/snapshots"

	"github.com/fast-sandbox/fast-sandbox/pkg/testimage"
)

// Environment variables the rig exports (see scripts/rig.sh and `make test`).
const (
	// EnvSocket is the address of the rig's containerd gRPC socket.
	EnvSocket = "FSB_CONTAINERD_SOCKET"
	// EnvImageTar is the OCI archive of the test image (ImageRef).
	EnvImageTar = "FSB_TEST_IMAGE_TAR"
	// EnvRunscWrapper is the runsc wrapper to use as the runc shim's BinaryName.
	EnvRunscWrapper = "FSB_RUNSC_WRAPPER"
	// EnvBinary is the static fsb binary that `make build` produces.
	EnvBinary = "FSB_BINARY"
	// EnvHelperBinary is the static fsb-helper binary (init and log driver)
	// that `make build` produces beside fsb.
	EnvHelperBinary = "FSB_HELPER_BINARY"
	// EnvRigDir is the directory the rig lives in.
	EnvRigDir = "FSB_RIG_DIR"
)

const (
	// ImageRef is the busybox image every test namespace holds, unpacked.
	ImageRef = testimage.Ref
	// Snapshotter is the snapshotter the image is unpacked for; it is also
	// the namespace's default.
	Snapshotter = "overlayfs"
	// Runtime is the containerd runtime (shim) tests use; pick runc, crun or
	// gVisor with options.Options.BinaryName.
	Runtime = plugin.RuntimeRuncV2

	namespacePrefix = "fsbtest-"
	// maxNamespace is containerd's limit on identifiers.
	maxNamespace = 76
	// runcRoot is where the runc shim keeps runtime state, per namespace.
	runcRoot = "/run/containerd/runc"
	// cgroupRoot is where the runc shim puts containers: /<namespace>/<id>.
	cgroupRoot = "/sys/fs/cgroup"

	connectTimeout = 5 * time.Second
	setupTimeout   = 2 * time.Minute
	cleanupTimeout = 2 * time.Minute
	exitTimeout    = 10 * time.Second
)

const rigAdvice = "run `make test`, or start the rig by hand with " +
	"`scripts/rig.sh up DIR` (a short DIR, e.g. from `mktemp -d /tmp/fsb-rig.XXXX`) " +
	"and then `source DIR/env`"

// Env returns the value of the environment variable name, failing the test
// with the command that sets it up when it is unset.
func Env(t testing.TB, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: this test needs the project's test rig; %s", name, rigAdvice)
	}
	return v
}

// FsbBinary returns the path of the static fsb binary (FSB_BINARY), failing
// the test when it is unset or missing.
func FsbBinary(t testing.TB) string {
	t.Helper()
	p := os.Getenv(EnvBinary)
	if p == "" {
		t.Fatalf("%s is not set: run `make build` and export %s=<repo>/bin/fsb, or run `make test`", EnvBinary, EnvBinary)
	}
	if err := checkExecutable(p); err != nil {
		t.Fatalf("%s: %v: run `make build`, or run `make test`", EnvBinary, err)
	}
	return p
}

// HelperBinary returns the path of the static fsb-helper binary
// (FSB_HELPER_BINARY), failing the test when it is unset or missing.
func HelperBinary(t testing.TB) string {
	t.Helper()
	p := os.Getenv(EnvHelperBinary)
	if p == "" {
		t.Fatalf("%s is not set: run `make build` and export %s=<repo>/bin/fsb-helper, or run `make test`", EnvHelperBinary, EnvHelperBinary)
	}
	if err := checkExecutable(p); err != nil {
		t.Fatalf("%s: %v: run `make build`, or run `make test`", EnvHelperBinary, err)
	}
	return p
}

// RunscWrapper returns the runsc wrapper (FSB_RUNSC_WRAPPER) to pass as the
// runc shim's BinaryName for gVisor, failing the test when it is missing.
func RunscWrapper(t testing.TB) string {
	t.Helper()
	p := Env(t, EnvRunscWrapper)
	if err := checkExecutable(p); err != nil {
		t.Fatalf("%s: %v; %s", EnvRunscWrapper, err, rigAdvice)
	}
	return p
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

// Containerd connects to the rig's containerd and returns a client whose
// default namespace is a fresh one made for this test, holding ImageRef
// unpacked for Snapshotter. When the test ends, every task, container,
// image, content blob, snapshot and lease of that namespace is removed, then
// the namespace itself, and the client is closed.
func Containerd(t testing.TB) (*containerd.Client, string) {
	t.Helper()
	return ContainerdAt(t, Env(t, EnvSocket))
}

// ContainerdAt is Containerd for the daemon listening on sock, such as a
// PrivateContainerd.
func ContainerdAt(t testing.TB, sock string) (*containerd.Client, string) {
	t.Helper()
	archive := Env(t, EnvImageTar)
	ns := namespaceName(t.Name())
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Type() != os.ModeSocket {
		// Fail at once: dialing a missing socket would retry until the timeout.
		t.Fatalf("no containerd socket at %s (%s); the rig is down or the environment is stale; %s", sock, EnvSocket, rigAdvice)
	}

	client, err := containerd.New(sock,
		containerd.WithTimeout(connectTimeout),
		containerd.WithDefaultNamespace(ns),
		// Set explicitly so that New does not look up the labels of a
		// namespace that does not exist yet.
		containerd.WithDefaultRuntime(Runtime),
	)
	if err != nil {
		t.Fatalf("containerd at %s (%s) is not reachable: %v; %s", sock, EnvSocket, err, rigAdvice)
	}
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), ns), setupTimeout)
	defer cancel()
	if _, err := client.Version(ctx); err != nil {
		client.Close()
		t.Fatalf("containerd at %s (%s) does not answer: %v; %s", sock, EnvSocket, err, rigAdvice)
	}
	err = client.NamespaceService().Create(ctx, ns, map[string]string{
		defaults.DefaultSnapshotterNSLabel: Snapshotter,
		defaults.DefaultRuntimeNSLabel:     Runtime,
	})
	if err != nil {
		client.Close()
		t.Fatalf("create containerd namespace %s: %v", ns, err)
	}
	t.Cleanup(func() {
		defer client.Close()
		if err := Cleanup(client, ns); err != nil {
			t.Errorf("rig cleanup of containerd namespace %s: %v", ns, err)
		}
	})

	if err := importImage(ctx, client, archive); err != nil {
		t.Fatalf("import %s (%s): %v; %s", archive, EnvImageTar, err, rigAdvice)
	}
	return client, ns
}

// importImage imports the archive into the context's namespace and unpacks
// every image in it.
func importImage(ctx context.Context, client *containerd.Client, archive string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	imgs, err := client.Import(ctx, f)
	if err != nil {
		return err
	}
	found := false
	for _, img := range imgs {
		found = found || img.Name == ImageRef
		if err := containerd.NewImage(client, img).Unpack(ctx, Snapshotter); err != nil {
			return fmt.Errorf("unpack %s: %w", img.Name, err)
		}
	}
	if !found {
		return fmt.Errorf("the archive holds no image named %s", ImageRef)
	}
	return nil
}

// namespaceName returns a containerd namespace for the test called name:
// "fsbtest-", the test name reduced to [a-z0-9-], and a random suffix.
func namespaceName(name string) string {
	return uniqueName(name, maxNamespace)
}

// uniqueName returns "fsbtest-", name reduced to [a-z0-9-] and a random
// suffix, at most limit characters: a valid containerd namespace and, with
// limit 63, a valid Kubernetes namespace (a DNS-1123 label).
func uniqueName(name string, limit int) string {
	var suffix [4]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	tail := "-" + hex.EncodeToString(suffix[:])

	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(name) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	s := b.String()
	if room := limit - len(namespacePrefix) - len(tail); len(s) > room {
		s = s[:room]
	}
	s = strings.TrimRight(s, "-")
	if s == "" {
		return namespacePrefix + tail[1:]
	}
	return namespacePrefix + s + tail
}

// Cleanup removes everything in containerd namespace ns and then the
// namespace: tasks are killed and deleted, containers deleted with their
// snapshots, then leases, images, content and remaining snapshots. It also
// removes the namespace's empty runc state and cgroup directories on the
// host. Containerd calls it when a test ends; it is exported for tests that
// make namespaces of their own.
func Cleanup(client *containerd.Client, ns string) error {
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), ns), cleanupTimeout)
	defer cancel()
	var errs []error

	containers, err := client.Containers(ctx)
	if err != nil {
		errs = append(errs, fmt.Errorf("list containers: %w", err))
	}
	for _, c := range containers {
		if err := deleteContainer(ctx, c); err != nil {
			errs = append(errs, fmt.Errorf("container %s: %w", c.ID(), err))
		}
	}

	ls := client.LeasesService()
	if all, err := ls.List(ctx); err != nil {
		errs = append(errs, fmt.Errorf("list leases: %w", err))
	} else {
		for _, l := range all {
			if err := ls.Delete(ctx, l); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("lease %s: %w", l.ID, err))
			}
		}
	}

	is := client.ImageService()
	if all, err := is.List(ctx); err != nil {
		errs = append(errs, fmt.Errorf("list images: %w", err))
	} else {
		for i, img := range all {
			var opts []images.DeleteOpt
			if i == len(all)-1 {
				// Let the garbage collector drop content and unpacked
				// snapshots before we look for leftovers.
				opts = append(opts, images.SynchronousDelete())
			}
			if err := is.Delete(ctx, img.Name, opts...); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("image %s: %w", img.Name, err))
			}
		}
	}

	errs = append(errs, deleteContent(ctx, client.ContentStore())...)
	errs = append(errs, deleteSnapshots(ctx, client)...)

	if err := client.NamespaceService().Delete(ctx, ns); err != nil && !errdefs.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("delete namespace: %w", err))
	}
	removeHostLeftovers(ns)
	return errors.Join(errs...)
}

// deleteContainer kills and deletes c's task, if any, then c and its snapshot.
func deleteContainer(ctx context.Context, c containerd.Container) error {
	task, err := c.Task(ctx, nil)
	switch {
	case errdefs.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("load task: %w", err)
	default:
		exited, werr := task.Wait(ctx)
		// The task may have exited already: Delete below reports real trouble.
		_ = task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll)
		if werr == nil {
			select {
			case <-exited:
			case <-time.After(exitTimeout):
			case <-ctx.Done():
			}
		}
		// A plain Delete suits an exited task (gVisor refuses
		// WithProcessKill once its sandbox is gone); WithProcessKill
		// covers one that is still running.
		if _, err := task.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
			if _, err2 := task.Delete(ctx, containerd.WithProcessKill); err2 != nil && !errdefs.IsNotFound(err2) {
				return fmt.Errorf("delete task: %w", errors.Join(err, err2))
			}
		}
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete: %w", err)
	}
	return nil
}

// deleteContent aborts unfinished ingests and deletes every remaining blob.
func deleteContent(ctx context.Context, cs content.Store) []error {
	var errs []error
	if statuses, err := cs.ListStatuses(ctx); err != nil {
		errs = append(errs, fmt.Errorf("list ingests: %w", err))
	} else {
		for _, st := range statuses {
			if err := cs.Abort(ctx, st.Ref); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("abort ingest %s: %w", st.Ref, err))
			}
		}
	}
	var blobs []content.Info
	if err := cs.Walk(ctx, func(info content.Info) error {
		blobs = append(blobs, info)
		return nil
	}); err != nil {
		return append(errs, fmt.Errorf("list content: %w", err))
	}
	for _, info := range blobs {
		if err := cs.Delete(ctx, info.Digest); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("content %s: %w", info.Digest, err))
		}
	}
	return errs
}

// deleteSnapshots removes every snapshot of every working snapshotter,
// children before parents.
func deleteSnapshots(ctx context.Context, client *containerd.Client) []error {
	resp, err := client.IntrospectionService().Plugins(ctx, []string{"type==" + plugin.SnapshotPlugin.String()})
	if err != nil {
		return []error{fmt.Errorf("list snapshotters: %w", err)}
	}
	var errs []error
	for _, p := range resp.Plugins {
		if p.InitErr != nil {
			continue
		}
		sn := client.SnapshotService(p.ID)
		for {
			var keys []string
			if err := sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
				keys = append(keys, info.Name)
				return nil
			}); err != nil {
				errs = append(errs, fmt.Errorf("list %s snapshots: %w", p.ID, err))
				break
			}
			if len(keys) == 0 {
				break
			}
			removed := 0
			var last error
			for _, k := range keys {
				// A parent refuses removal until its children are gone.
				if err := sn.Remove(ctx, k); err == nil || errdefs.IsNotFound(err) {
					removed++
				} else {
					last = err
				}
			}
			if removed == 0 {
				errs = append(errs, fmt.Errorf("%s snapshots left: %w", p.ID, last))
				break
			}
		}
	}
	return errs
}

// removeHostLeftovers removes the empty directories the runc shim and the
// runtimes leave behind for a namespace: the runtime state root and the
// /<namespace> cgroup parents. Only empty directories go; errors are ignored.
func removeHostLeftovers(ns string) {
	if !strings.HasPrefix(ns, namespacePrefix) {
		// Only namespaces that Containerd made are known to be ours alone.
		return
	}
	_ = os.Remove(filepath.Join(runcRoot, ns))
	dirs, _ := filepath.Glob(filepath.Join(cgroupRoot, "*", ns))
	dirs = append(dirs, filepath.Join(cgroupRoot, ns))
	for _, d := range dirs {
		removeEmptyTree(d)
	}
}

// removeEmptyTree removes directory d and its subdirectories, deepest first.
// On cgroupfs, rmdir succeeds on a cgroup with no processes and no children
// even though its control files are listed.
func removeEmptyTree(d string) {
	entries, err := os.ReadDir(d)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() {
			removeEmptyTree(filepath.Join(d, e.Name()))
		}
	}
	_ = syscall.Rmdir(d)
}
