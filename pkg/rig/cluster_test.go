package rig

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestClusterRunsAPod starts a node-only cluster and checks what a user of
// it relies on: the node is Ready, a pod runs on the CNI bridge and reaches
// the API server through the kubernetes Service's ClusterIP (kube-proxy),
// and the cluster's addresses are reachable from its network namespace.
func TestClusterRunsAPod(t *testing.T) {
	start := time.Now()
	c := StartCluster(t, NodeOnly)
	t.Logf("node-only cluster up in %v", time.Since(start).Round(time.Millisecond))

	out, err := c.Kubectl("get", "node", "-o", `jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(out); len(got) != 2 || got[1] != "True" {
		t.Fatalf("nodes: %q, want one Ready node", out)
	}

	ip, err := c.Kubectl("get", "service", "kubernetes", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil {
		t.Fatal(err)
	}
	podStart := time.Now()
	// nc exits 0 only when it connects: the ClusterIP leads to the API
	// server only through kube-proxy's rules.
	if _, err := c.Kubectl("run", "probe", "--image", ImageRef, "--image-pull-policy", "Never", "--restart", "Never",
		"--command", "--", "sh", "-c", "echo | nc -w 5 "+ip+" 443 && echo reached-the-api-server"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Kubectl("wait", "--for", "jsonpath={.status.phase}=Succeeded", "--timeout", "60s", "pod/probe"); err != nil {
		phase, _ := c.Kubectl("get", "pod", "probe", "-o", "yaml")
		t.Fatalf("%v\n%s", err, phase)
	}
	t.Logf("pod ran to completion in %v", time.Since(podStart).Round(time.Millisecond))
	logs, err := c.Kubectl("logs", "probe")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs, "reached-the-api-server") {
		t.Errorf("pod log %q: the pod did not reach the API server at %s:443", logs, ip)
	}
	podIP, err := c.Kubectl("get", "pod", "probe", "-o", "jsonpath={.status.podIP}")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(podIP, "10.124.") {
		t.Errorf("pod IP %q, want one of the CNI bridge's 10.124.0.0/16", podIP)
	}

	// The node's address lives in the cluster's namespace, not the host's.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr, err := c.InNetns(ctx, "ip", "-4", "-o", "addr", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip addr in %s: %v\n%s", c.Netns, err, addr)
	}
	if !strings.Contains(string(addr), "10.123.0.2/24") || !strings.Contains(string(addr), "cni0") {
		t.Errorf("addresses in %s:\n%s\nwant the node's 10.123.0.2/24 and the bridge cni0", c.Netns, addr)
	}

	// Down leaves nothing: no daemon, network namespace, directory or
	// cgroup of the cluster.
	if err := c.Down(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "netns", "list").Output(); err != nil {
		t.Fatal(err)
	} else if strings.Contains(string(out), c.Netns) {
		t.Errorf("network namespace %s left after down:\n%s", c.Netns, out)
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s left after down: %v", c.Dir, err)
	}
	// The cgroup root the kubelet put pods under is named as the namespace.
	if left, _ := filepath.Glob("/sys/fs/cgroup/*/" + c.Netns); len(left) > 0 {
		t.Errorf("cgroups left after down: %v", left)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(c.Dir+"/")) {
			t.Errorf("process %s left after down: %q", filepath.Dir(p), bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
}

// TestFailedUpLeavesNothing: an up that fails half-way (here the API
// server exits at once, while the images build and the overlay renders in
// the background) removes its directory and leaves no process of it
// behind when it returns.
func TestFailedUpLeavesNothing(t *testing.T) {
	kubeBin := filepath.Dir(kubectlPath(t))
	bin := t.TempDir()
	for _, c := range []string{"kubectl", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"} {
		if err := os.Symlink(filepath.Join(kubeBin, c), filepath.Join(bin, c)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(bin, "kube-apiserver"), []byte("#!/bin/sh\necho a broken API server >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvKubeBin, bin)
	parent := t.TempDir()
	dir := filepath.Join(parent, "c")
	c, err := UpCluster(dir, "")
	if err == nil {
		c.Down()
		t.Fatal("up with an API server that exits at once succeeded")
	}
	if !strings.Contains(err.Error(), "kube-apiserver exited") {
		t.Errorf("up failed with %v, want it to say the API server exited", err)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(dir+"/")) {
			t.Errorf("process %s left after the failed up: %q", filepath.Dir(p), bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		entries, _ := os.ReadDir(dir)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("%s left after the failed up (%v), holding %v", dir, err, names)
	}
	// scripts/cluster.sh names the namespace after DIR.
	netns := fmt.Sprintf("fsbc-%x", sha256.Sum256([]byte(dir)))[:len("fsbc-")+10]
	if out, err := exec.Command("ip", "netns", "list").Output(); err != nil {
		t.Fatal(err)
	} else if strings.Contains(string(out), netns) {
		t.Errorf("network namespace %s left after the failed up:\n%s", netns, out)
	}
}
