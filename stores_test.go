//go:build !fsbhelper

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"

	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// storeKind is where a test's controller keeps its Sandbox objects.
type storeKind string

const (
	// embeddedStore is the bbolt file in the controller's --data-dir.
	embeddedStore storeKind = "embedded"
	// kubeStore is the Sandbox CRD on a real kube-apiserver.
	kubeStore storeKind = "kube"
)

// onEachStore runs test once per store kind, as subtests named after it:
// the control-plane tests hold on either store.
func onEachStore(t *testing.T, test func(t *testing.T, kind storeKind)) {
	for _, kind := range []storeKind{embeddedStore, kubeStore} {
		t.Run(string(kind), func(t *testing.T) { test(t, kind) })
	}
}

// storeArgs returns the controller flags of a store of kind: the embedded
// store in dir, or the kube store on the suite's API server (suiteKube),
// whose Sandboxes and SandboxPools are all removed once t and its
// controller have ended.
func storeArgs(t testing.TB, kind storeKind, dir string) []string {
	t.Helper()
	switch kind {
	case embeddedStore:
		return []string{"--store", "embedded", "--data-dir", filepath.Join(dir, "data")}
	case kubeStore:
		// One controller, no Lease: these tests are about the store, and
		// a controller killed and started again would wait a lease
		// duration for its own former Lease (leader_test.go tests that).
		return append(kubeStoreArgs(t), "--leader-elect=false")
	}
	t.Fatalf("unknown store kind %q", kind)
	return nil
}

// kubeStoreArgs returns the controller flags of the kube store on the
// suite's API server; the Sandboxes and SandboxPools there are all removed
// once t and its controller have ended.
func kubeStoreArgs(t testing.TB) []string {
	t.Helper()
	kubeconfig := suiteKube.get(t)
	// Registered before the controller's own clean-up, so it runs after
	// the controller is gone.
	t.Cleanup(func() {
		if err := removeTestObjects(kubeconfig); err != nil {
			t.Errorf("remove the test's Sandboxes and SandboxPools from the suite's API server: %v", err)
		}
	})
	return []string{"--store", "kube", "--kubeconfig", kubeconfig}
}

// suiteKube is an API server of this package's own, which its kube-mode
// control-plane tests share, one test at a time; it is started by the
// first of them and stopped by TestMain.
//
// Not the run's shared server (rig.Kube): the controller watches every
// namespace, so there it would place the Sandboxes that other packages'
// tests make in their namespaces meanwhile (on this test's agent, changing
// their objects under them, and filling this test's slots). Not one per
// test (rig.StartKube) either: starting one takes 20-30 s on a busy
// 2-core machine. Here each test leaves no Sandbox behind (storeArgs), so
// the next test's controller finds none.
var suiteKube kubeSuite

type kubeSuite struct {
	once       sync.Once
	dir        string
	kubeconfig string
	err        error
}

// get returns the suite server's admin kubeconfig, starting the server on
// the first call; a server that cannot start fails t.
func (k *kubeSuite) get(t testing.TB) string {
	t.Helper()
	k.once.Do(func() {
		began := time.Now()
		k.err = k.start()
		if k.err == nil {
			t.Logf("the suite's API server is ready in %s", time.Since(began).Round(time.Millisecond))
		}
	})
	if k.err != nil {
		t.Fatalf("the suite's API server: %v", k.err)
	}
	return k.kubeconfig
}

// start starts etcd and kube-apiserver with scripts/kube.sh, as
// rig.StartKube does, and applies the CRDs.
func (k *kubeSuite) start() error {
	bin := os.Getenv(rig.EnvKubeBin)
	if bin == "" {
		return fmt.Errorf("%s is not set: run `make test`, or see scripts/kube.sh", rig.EnvKubeBin)
	}
	base := os.Getenv(rig.EnvKubeRunDir) // scripts/test.sh stops what a crash leaves there
	if base == "" {
		base = os.TempDir()
	}
	dir, err := os.MkdirTemp(base, "suite-")
	if err != nil {
		return err
	}
	k.dir = dir
	if out, err := exec.Command("scripts/kube.sh", "start", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("scripts/kube.sh start %s: %v\n%s", dir, err, out)
	}
	k.kubeconfig = filepath.Join(dir, "kubeconfig")
	kubectl := func(args ...string) error {
		out, err := exec.Command(filepath.Join(bin, "kubectl"), append([]string{"--kubeconfig", k.kubeconfig}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := kubectl("apply", "--server-side", "-f", "deploy/crds"); err != nil {
		return err
	}
	// The pool namespace of a controller whose agents --agents names, as
	// deploy/ makes it.
	if err := kubectl("create", "namespace", "fsb-system"); err != nil {
		return err
	}
	// kubectl wait fails at once on a CRD without conditions yet.
	deadline := time.Now().Add(time.Minute)
	for {
		err := kubectl("wait", "--for", "condition=Established", "--timeout", "1m", "-f", "deploy/crds")
		if err == nil || !strings.Contains(err.Error(), "accessor error") || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopAPIServer stops the suite's kube-apiserver (etcd keeps its data), as
// an outage would; startAPIServer starts it again on the same address and
// returns once it is ready.
func (k *kubeSuite) stopAPIServer(t testing.TB) { k.script(t, "stop-apiserver") }

func (k *kubeSuite) startAPIServer(t testing.TB) { k.script(t, "start-apiserver") }

func (k *kubeSuite) script(t testing.TB, command string) {
	t.Helper()
	if out, err := exec.Command("scripts/kube.sh", command, k.dir).CombinedOutput(); err != nil {
		t.Fatalf("scripts/kube.sh %s %s: %v\n%s", command, k.dir, err, out)
	}
}

// stop stops the suite's server, if it was started.
func (k *kubeSuite) stop() {
	if k.dir == "" {
		return
	}
	if out, err := exec.Command("scripts/kube.sh", "stop", k.dir).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "stop the suite's API server: %v\n%s", err, out)
	}
	os.RemoveAll(k.dir)
}

func TestMain(m *testing.M) {
	code := m.Run()
	suiteKube.stop()
	os.Exit(code)
}

// removeTestObjects removes every Sandbox and SandboxPool on the API
// server of kubeconfig, finalizers dropped: the controller that set them is
// gone.
func removeTestObjects(kubeconfig string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	st, err := store.NewKube(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list, err := st.List(ctx, "", nil)
	if err != nil {
		return err
	}
	var errs []error
	for _, sb := range list.Items {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			have, err := st.Get(ctx, sb.Namespace, sb.Name)
			if err != nil || len(have.Finalizers) == 0 {
				return err
			}
			have.Finalizers = nil
			_, err = st.Update(ctx, have)
			return err
		})
		if err == nil {
			err = st.Delete(ctx, sb.Namespace, sb.Name)
		}
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("%s/%s: %w", sb.Namespace, sb.Name, err))
		}
	}
	pools, err := st.Pools().List(ctx, "", nil)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, pool := range pools.Items {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			have, err := st.Pools().Get(ctx, pool.Namespace, pool.Name)
			if err != nil || len(have.Finalizers) == 0 {
				return err
			}
			have.Finalizers = nil
			_, err = st.Pools().Update(ctx, have)
			return err
		})
		if err == nil {
			err = st.Pools().Delete(ctx, pool.Namespace, pool.Name)
		}
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("sandboxpool %s/%s: %w", pool.Namespace, pool.Name, err))
		}
	}
	return errors.Join(errs...)
}
