package rig

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var crdNames = []string{"sandboxes." + CRDGroup, "sandboxpools." + CRDGroup}

// sandboxWithFinalizer is a Sandbox a controller has claimed: deleting it
// alone would leave it behind, waiting for that controller.
const sandboxWithFinalizer = `apiVersion: sandbox.fast.io/v1alpha1
kind: Sandbox
metadata:
  name: claimed
  finalizers: [sandbox.fast.io/test]
spec:
  image: localhost/fsb/busybox:latest
`

func TestKubeSharedServer(t *testing.T) {
	t.Parallel()
	var env *KubeEnv
	ok := t.Run("inner", func(t *testing.T) {
		env = Kube(t)
		other := Kube(t)
		dns1123 := regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
		for _, ns := range []string{env.Namespace, other.Namespace} {
			if !dns1123.MatchString(ns) || len(ns) > 63 || !strings.HasPrefix(ns, "fsbtest-testkubesharedserver-inner-") {
				t.Errorf("namespace %q: want fsbtest-<test name>-<suffix>, a DNS-1123 label", ns)
			}
		}
		if env.Namespace == other.Namespace {
			t.Fatalf("two calls gave the same namespace %s", env.Namespace)
		}
		checkEstablished(t, env.Kubectl)

		if _, err := env.Kubectl(t, "-n", env.Namespace, "create", "configmap", "only-here", "--from-literal=k=v"); err != nil {
			t.Fatal(err)
		}
		if _, err := env.Kubectl(t, "-n", env.Namespace, "get", "configmap", "only-here"); err != nil {
			t.Fatalf("the configmap is not in its own namespace: %v", err)
		}
		_, err := other.Kubectl(t, "-n", other.Namespace, "get", "configmap", "only-here")
		if err == nil || !strings.Contains(err.Error(), "NotFound") {
			t.Fatalf("the configmap of %s is visible in %s: %v", env.Namespace, other.Namespace, err)
		}

		file := filepath.Join(t.TempDir(), "sandbox.yaml")
		if err := os.WriteFile(file, []byte(sandboxWithFinalizer), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := env.Kubectl(t, "-n", env.Namespace, "apply", "-f", file); err != nil {
			t.Fatalf("apply a Sandbox: %v", err)
		}
	})
	if !ok {
		return
	}

	// The inner test ended: its Sandbox is gone despite the finalizer, and
	// its namespace is gone or going.
	out, err := env.Kubectl(t, "-n", env.Namespace, "get", crdNames[0], "-o", "name")
	if err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("after the test, its namespace holds %q (%v); want no Sandbox", out, err)
	}
	out, err = env.Kubectl(t, "get", "namespace", env.Namespace, "-o", "jsonpath={.status.phase}")
	if err == nil && out != "Terminating" {
		t.Errorf("after the test, namespace %s is %q; want Terminating or gone", env.Namespace, out)
	}
}

func TestStartKube(t *testing.T) {
	t.Parallel()
	var leftovers []string // what must be gone once the test ends
	var pids []int
	ok := t.Run("server", func(t *testing.T) {
		s := StartKube(t)
		for _, name := range []string{"etcd", "kube-apiserver"} {
			b, err := os.ReadFile(filepath.Join(s.Dir, name+".pid"))
			if err != nil {
				t.Fatal(err)
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatal(err)
			}
			pids = append(pids, pid)
		}
		data, err := os.ReadFile(filepath.Join(s.Dir, "etcd-data"))
		if err != nil {
			t.Fatal(err)
		}
		leftovers = append(leftovers, s.Dir, strings.TrimSpace(string(data)))

		out, err := s.Kubectl(t, "version", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			Server struct {
				GitVersion string `json:"gitVersion"`
			} `json:"serverVersion"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("kubectl version: %v\n%s", err, out)
		}
		if !regexp.MustCompile(`^v1\.[0-9]+\.[0-9]+$`).MatchString(v.Server.GitVersion) {
			t.Errorf("the server reports version %q; want the pinned v1.X.Y stamped in at build", v.Server.GitVersion)
		}
		checkEstablished(t, s.Kubectl)

		ns := s.Namespace(t)
		if _, err := s.Kubectl(t, "-n", ns, "create", "configmap", "kept", "--from-literal=k=v"); err != nil {
			t.Fatal(err)
		}

		s.Stop()
		if _, err := s.Kubectl(t, "--request-timeout=2s", "-n", ns, "get", "configmap", "kept"); err == nil {
			t.Fatal("the API server still answers after Stop")
		}

		s.Start()
		out, err = s.Kubectl(t, "-n", ns, "get", "configmap", "kept", "-o", "jsonpath={.data.k}")
		if err != nil || out != "v" {
			t.Fatalf("after Start the configmap reads %q (%v); want it kept in etcd", out, err)
		}
	})
	if !ok {
		return
	}

	// The test ended: etcd and the API server are gone, with their files.
	for _, pid := range pids {
		if running(pid) {
			t.Errorf("process %d still runs after the test", pid)
		}
	}
	for _, p := range leftovers {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still exists after the test (%v)", p, err)
		}
	}
}

// running reports whether process pid exists and is not a zombie (init on
// these machines may be slow to reap what it inherits).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] != "Z"
}

// checkEstablished fails t unless every Fast Sandbox CRD is Established.
func checkEstablished(t *testing.T, kubectl func(testing.TB, ...string) (string, error)) {
	t.Helper()
	for _, crd := range crdNames {
		out, err := kubectl(t, "get", "crd", crd, "-o", `jsonpath={.status.conditions[?(@.type=="Established")].status}`)
		if err != nil || out != "True" {
			t.Errorf("CRD %s Established = %q (%v); want True", crd, out, err)
		}
	}
}
