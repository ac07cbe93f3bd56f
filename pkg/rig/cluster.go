package rig

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// NodeOnly is the overlay that deploys nothing: the cluster has its node,
// and no Fast Sandbox.
const NodeOnly = "none"

const (
	clusterUpTimeout   = 6 * time.Minute
	clusterDownTimeout = 2 * time.Minute
)

// Cluster is a real single-node Kubernetes cluster that scripts/cluster.sh
// started, with Fast Sandbox deployed on it unless the overlay was
// NodeOnly. Everything of the cluster lives in one network namespace; the
// host reaches the API server and the controller through 127.0.0.1.
type Cluster struct {
	// Dir holds the cluster's daemons, state and logs (FSB_CLUSTER_DIR).
	Dir string
	// Kubeconfig is the cluster admin's kubeconfig (KUBECONFIG).
	Kubeconfig string
	// KubectlPath is the pinned kubectl (FSB_KUBECTL).
	KubectlPath string
	// Server is the fsb-controller Service's fast path on the host's
	// loopback (FSB_SERVER); empty when nothing was deployed.
	Server string
	// Token is a user token the controller accepts (FSB_TOKEN).
	Token string
	// CAFile is the CA of the controller's certificate (FSB_CA_FILE).
	CAFile string
	// Netns is the cluster's network namespace (FSB_CLUSTER_NETNS).
	Netns string
	// Containerd is the node's CRI containerd socket
	// (FSB_CLUSTER_CONTAINERD).
	Containerd string
	// Namespace is where Fast Sandbox runs (FSB_CLUSTER_NAMESPACE).
	Namespace string
	// Log is what scripts/cluster.sh up printed: the time of each phase.
	Log string

	script string
}

const clusterAdvice = "a real cluster needs root, `make build` (bin/fsb, bin/fsb-helper) and the Kubernetes commands of " +
	"`scripts/kube.sh build`; run `make test`, or by hand `scripts/cluster.sh up DIR` (e.g. DIR from `mktemp -d /tmp/fsbc.XXXX`) " +
	"and `scripts/cluster.sh down DIR` after"

// StartCluster starts a cluster with overlay (a kustomize directory,
// absolute or relative to the repository root; "" for
// deploy/overlays/local; NodeOnly for none) in a directory of its own and
// stops it, with everything it ran, when t ends. It fails t with the
// script's output when the cluster does not come up.
func StartCluster(t testing.TB, overlay string) *Cluster {
	t.Helper()
	// Socket paths must stay short: not t.TempDir.
	dir, err := os.MkdirTemp("/tmp", "fsbc.")
	if err != nil {
		t.Fatal(err)
	}
	c, err := UpCluster(dir, overlay)
	if c != nil {
		t.Cleanup(func() {
			if err := c.Down(); err != nil {
				t.Errorf("stop the cluster: %v", err)
			}
		})
	}
	if err != nil {
		t.Fatalf("%v\n(%s)", err, clusterAdvice)
	}
	t.Logf("cluster up in %s:\n%s", dir, c.Log)
	return c
}

// UpCluster is StartCluster for a TestMain: it starts a cluster in dir (an
// empty or missing directory). On an error after the script ran, the
// returned Cluster is still there for Down, which removes what the failed
// start left.
func UpCluster(dir, overlay string) (*Cluster, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, fmt.Errorf("find scripts/cluster.sh: %w", err)
	}
	c := &Cluster{Dir: dir, script: filepath.Join(root, "scripts", "cluster.sh")}
	args := []string{"up", dir}
	if overlay != "" {
		args = append(args, "--overlay", overlay)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterUpTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.script, args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	c.Log = string(out)
	if err != nil {
		return c, fmt.Errorf("scripts/cluster.sh up %s: %w\n%s", dir, err, out)
	}
	if err := c.loadEnv(); err != nil {
		return c, err
	}
	return c, nil
}

// loadEnv fills c from DIR/env, read by bash as a user's shell would.
func (c *Cluster) loadEnv() error {
	file := filepath.Join(c.Dir, "env")
	out, err := exec.Command("bash", "-c", `source "$1" && env -0`, "bash", file).Output()
	if err != nil {
		return fmt.Errorf("read %s: %w", file, err)
	}
	env := map[string]string{}
	for _, kv := range bytes.Split(out, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok {
			env[k] = v
		}
	}
	for _, f := range []struct {
		dst      *string
		key      string
		required bool
	}{
		{&c.Kubeconfig, "KUBECONFIG", true},
		{&c.KubectlPath, "FSB_KUBECTL", true},
		{&c.Server, "FSB_SERVER", false},
		{&c.Token, "FSB_TOKEN", false},
		{&c.CAFile, "FSB_CA_FILE", false},
		{&c.Netns, "FSB_CLUSTER_NETNS", true},
		{&c.Containerd, "FSB_CLUSTER_CONTAINERD", true},
		{&c.Namespace, "FSB_CLUSTER_NAMESPACE", true},
	} {
		*f.dst = env[f.key]
		if f.required && *f.dst == "" {
			return fmt.Errorf("%s sets no %s", file, f.key)
		}
	}
	return nil
}

// Down stops the cluster and removes its directory, network namespace,
// mounts and cgroups. It may be called more than once.
func (c *Cluster) Down() error {
	ctx, cancel := context.WithTimeout(context.Background(), clusterDownTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, c.script, "down", c.Dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("scripts/cluster.sh down %s: %w\n%s", c.Dir, err, out)
	}
	return nil
}

// Kubectl runs the pinned kubectl as the cluster admin and returns its
// standard output; an error carries its standard error.
func (c *Cluster) Kubectl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), kubectlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.KubectlPath, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return string(out), nil
}

// InNetns returns the command name args run inside the cluster's network
// namespace (only: the mount namespace stays the host's), where pod IPs
// and ClusterIPs are reachable.
func (c *Cluster) InNetns(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=/run/netns/" + c.Netns, "--", name}, args...)...)
}
