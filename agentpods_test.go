//go:build !fsbhelper

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	mathrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// agentPodSelector is the selector deploy/ gives the controller.
const agentPodSelector = "app.kubernetes.io/name=fsb,app.kubernetes.io/component=agent"

// podAgents stands in for a node: agent pods created through the API
// server (bound to a node that does not exist, so nothing runs them), with
// the status a kubelet would write, and for each a real agent process
// listening at the pod's IP (a loopback address of its own).
type podAgents struct {
	t      *testing.T
	client kubernetes.Interface
	ns     string // the pods' namespace
	cns    string // containerd namespace of the agents
	port   int
	dir    string // the controller's directory, with the agents' token
	// net is the first three bytes of the pods' IPs: 127.x.y.
	net string
	n   int
	// tls, when set, makes the agents serve TLS with a certificate for
	// the agents' Service name only, as deploy/ gives them.
	tls *agentTLS
}

// agentTLS is the agents' certificate (for one DNS name, not their IPs)
// and the CA that signed it.
type agentTLS struct {
	name, certFile, keyFile, caFile string
	roots                           *x509.CertPool
}

// newAgentTLS issues a certificate for name from a CA of the test's.
func newAgentTLS(t *testing.T, name string) *agentTLS {
	t.Helper()
	ca := rig.NewCA(t)
	certPEM, keyPEM := ca.Issue(t, []string{name})
	dir := t.TempDir()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	return &agentTLS{
		name:     name,
		certFile: writeFile(t, dir, "tls.crt", string(certPEM)),
		keyFile:  writeFile(t, dir, "tls.key", string(keyPEM)),
		caFile:   writeFile(t, dir, "ca.crt", string(ca.PEM)),
		roots:    roots,
	}
}

func newPodAgents(t *testing.T, kubeconfig, containerdNS string) *podAgents {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ns := fmt.Sprintf("agentpods-%d", mathrand.IntN(1_000_000))
	if _, err := client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := &podAgents{t: t, client: client, ns: ns, cns: containerdNS, port: freePort(t), dir: t.TempDir(),
		net: fmt.Sprintf("127.%d.%d", 100+mathrand.IntN(100), 1+mathrand.IntN(250))}
	// The agents' token (launchAgent writes the same into each agent's
	// directory), for the controller's --agent-token-file.
	if err := os.WriteFile(filepath.Join(p.dir, "token"), []byte("e2e-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// No kubelet finishes a graceful delete here: force it, so that
		// the namespace can go.
		zero := int64(0)
		ctx := context.Background()
		_ = client.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
		_ = client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	})
	return p
}

// add creates an agent pod and starts its agent, which reports agentID
// ("" for the pod's UID, as --agent-id=$(POD_UID) does), then marks the
// pod Running with its IP. It returns the pod and the agent.
func (p *podAgents) add(name, agentID string) (*corev1.Pod, *agentProc) {
	p.t.Helper()
	ctx := context.Background()
	pod, err := p.client.CoreV1().Pods(p.ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			"app.kubernetes.io/name": "fsb", "app.kubernetes.io/component": "agent"}},
		Spec: corev1.PodSpec{NodeName: "node-of-" + name, Containers: []corev1.Container{{Name: "agent", Image: "localhost/fsb/fsb:latest"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		p.t.Fatal(err)
	}
	if agentID == "" {
		agentID = string(pod.UID)
	}
	p.n++
	ip := fmt.Sprintf("%s.%d", p.net, p.n)
	// Each agent its own directory: an agent's log dir is its alone.
	scheme, client := "http", http.DefaultClient
	args := []string{"--bind-address", ip, "--advertise-address", ip, "--node-name", "node-of-" + name}
	if p.tls != nil {
		scheme = "https"
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.tls.roots, ServerName: p.tls.name}}}
		args = append(args, "--tls-cert-file", p.tls.certFile, "--tls-key-file", p.tls.keyFile)
	}
	a := launchAgent(p.t, scheme, p.port, p.cns, agentID, p.t.TempDir(), args...)
	a.base = fmt.Sprintf("%s://%s:%d", scheme, ip, p.port)
	waitReady(p.t, client, a.base+"/readyz", a.stderr)
	pod.Status.Phase = corev1.PodRunning
	pod.Status.PodIP = ip
	pod.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	if pod, err = p.client.CoreV1().Pods(p.ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		p.t.Fatal(err)
	}
	return pod, a
}

// TestAgentsFoundFromTheirPods runs a controller with --agent-pod-selector
// over agent pods the test drives through the API server: it places
// sandboxes on the agents of Running pods, follows a pod that starts
// while it runs, and when a pod is deleted its agent is down: a Manual
// sandbox there is Lost after the lost timeout, an AutoRecreate one runs
// as revision 2 on the other agent. An agent that reports another ID than
// its pod's UID is warned about.
func TestAgentsFoundFromTheirPods(t *testing.T) {
	cd, cns := rig.Containerd(t)
	store := append(kubeStoreArgs(t), "--leader-elect=false")
	kubeconfig := store[slices.Index(store, "--kubeconfig")+1]
	pods := newPodAgents(t, kubeconfig, cns)
	first, firstAgent := pods.add("agent-a", "")

	janitorToken := filepath.Join(pods.dir, "janitor-token")
	if err := os.WriteFile(janitorToken, []byte("janitor-token-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctrl, server := newControllerProcWith(t, store, pods.dir, firstAgent, append(slices.Clone(fastLifecycle),
		"--agent-pod-selector", agentPodSelector, "--agent-pod-namespace", pods.ns, "--agent-port", fmt.Sprint(pods.port),
		"--janitor-token-file", janitorToken)...)
	// Agents come from the pods alone: --agents with the selector is an
	// error, which the next check shows.
	i := slices.Index(ctrl.args, "--agents")
	ctrl.args = slices.Delete(ctrl.args, i, i+2)
	ctrl.start()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller log:\n%s", ctrl.log.String())
		}
	})
	if !strings.Contains(ctrl.log.String(), `"agentPods":"`+pods.ns+`/app.kubernetes.io/component=agent,app.kubernetes.io/name=fsb"`) {
		t.Errorf("the start-up log does not say the agents come from pods:\n%s", ctrl.log.String())
	}
	p := &plane{t: t, ctrl: ctrl, server: server, metrics: ctrl.metrics,
		api: fsbv1connect.NewFastPathServiceClient(http.DefaultClient, server, connect.WithInterceptors(auth.Bearer("user-token-1")))}

	create := func(name string, policy fsbv1.FailurePolicy) {
		t.Helper()
		if _, err := p.api.CreateSandbox(context.Background(), connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: name, Spec: &fsbv1.SandboxSpec{
			Image: rig.ImageRef, Command: []string{"sleep", "300"}, FailurePolicy: policy,
		}})); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
	}
	create("manual", fsbv1.FailurePolicy_FAILURE_POLICY_MANUAL)
	create("moving", fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE)
	for _, name := range []string{"manual", "moving"} {
		sb := p.waitFor(name, 10*time.Second, "Running", phaseIs(fsbv1.Phase_PHASE_RUNNING))
		if got := sb.GetStatus().GetAssignedPod(); got != string(first.UID) {
			t.Fatalf("%s placed on agent %q, want the only pod's UID %s", name, got, first.UID)
		}
		if ep := sb.GetStatus().GetEndpoints(); len(ep) > 0 && !strings.HasPrefix(ep[0], first.Status.PodIP+":") {
			t.Errorf("%s's endpoints %v are not at its pod's IP %s", name, ep, first.Status.PodIP)
		}
	}
	movingID := p.get("moving").GetStatus().GetSandboxId()
	manualID := p.get("manual").GetStatus().GetSandboxId()

	// A second agent pod starts while the controller runs.
	second, _ := pods.add("agent-b", "")
	waitAgents(t, p, string(first.UID), string(second.UID))

	// The first pod goes: its agent (still running, unreachable for a
	// real node's pod) is no agent any more.
	deleted := time.Now()
	if err := pods.client.CoreV1().Pods(pods.ns).Delete(context.Background(), first.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	lost := p.waitFor("manual", 15*time.Second, "Lost", phaseIs(fsbv1.Phase_PHASE_LOST))
	lostAfter := time.Since(deleted)
	t.Logf("Manual sandbox Lost %s after its agent's pod was deleted (lost timeout 2s): %q", lostAfter.Round(time.Millisecond), lost.GetStatus().GetMessage())
	// The silence counts from the agent's last message, at most a
	// heartbeat (200ms) before the deletion.
	if lostAfter < 2*time.Second-300*time.Millisecond {
		t.Errorf("Lost %s after the pod's deletion, before the 2s lost timeout", lostAfter)
	}
	moved := p.waitFor("moving", 15*time.Second, "Running as revision 2 on the other agent", func(sb *fsbv1.Sandbox) bool {
		return sb.GetStatus().GetRevision() == 2 && sb.GetStatus().GetPhase() == fsbv1.Phase_PHASE_RUNNING
	})
	t.Logf("AutoRecreate sandbox running as revision 2 %s after the pod's deletion", time.Since(deleted).Round(time.Millisecond))
	if got := moved.GetStatus().GetAssignedPod(); got != string(second.UID) {
		t.Errorf("revision 2 placed on %q, want the second pod's agent %s", got, second.UID)
	}
	if revs := revisions(t, cd, cns, movingID); revs[runtime.ContainerID(movingID, 2)] == "" {
		t.Errorf("revision 2's container is not in containerd: %v", revs)
	}

	// The node janitor's question: the gone agent's revision 1 of the
	// moved sandbox is nobody's (a janitor removes it after its orphan
	// timeout); the Lost Manual sandbox is its object's until deleted.
	janitor := fsbv1connect.NewJanitorServiceClient(http.DefaultClient, server, connect.WithInterceptors(auth.Bearer("janitor-token-1")))
	verdict := func(agent types.UID, id string, revision int64) (fsbv1.Verdict, string) {
		t.Helper()
		resp, err := janitor.Classify(context.Background(), connect.NewRequest(&fsbv1.ClassifyRequest{Sandboxes: []*fsbv1.SandboxRef{
			{AgentId: string(agent), SandboxId: id, Revision: revision}}}))
		if err != nil {
			t.Fatal(err)
		}
		c := resp.Msg.GetClassifications()[0]
		return c.GetVerdict(), c.GetReason()
	}
	for _, c := range []struct {
		what     string
		agent    types.UID
		id       string
		revision int64
		want     fsbv1.Verdict
	}{
		{"the moved sandbox's revision 1 on the gone agent", first.UID, movingID, 1, fsbv1.Verdict_VERDICT_UNKNOWN},
		{"the moved sandbox's revision 2", second.UID, movingID, 2, fsbv1.Verdict_VERDICT_KNOWN},
		{"the Lost Manual sandbox on the gone agent", first.UID, manualID, 1, fsbv1.Verdict_VERDICT_KNOWN},
	} {
		if got, why := verdict(c.agent, c.id, c.revision); got != c.want {
			t.Errorf("%s: %v (%s), want %v", c.what, got, why, c.want)
		}
	}
	p.mustCtl("delete", "manual")
	if got, why := verdict(first.UID, manualID, 1); got != fsbv1.Verdict_VERDICT_UNKNOWN {
		t.Errorf("the deleted Manual sandbox on the gone agent: %v (%s), want unknown", got, why)
	}

	// An agent whose ID is not its pod's UID (--agent-id not set from
	// the pod) is warned about, naming both.
	third, _ := pods.add("agent-c", "not-the-pod-uid")
	want := fmt.Sprintf(`"expected":"%s","reported":"not-the-pod-uid"`, third.UID)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(ctrl.log.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no warning naming both IDs (%s) 10s after the pod ran", want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitAgents waits until ListAgents lists the agents ids.
func waitAgents(t *testing.T, p *plane, ids ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := p.api.ListAgents(context.Background(), connect.NewRequest(&fsbv1.ListAgentsRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range resp.Msg.GetAgents() {
			got = append(got, a.GetAgentId())
		}
		if all := func() bool {
			for _, id := range ids {
				if !slices.Contains(got, id) {
					return false
				}
			}
			return true
		}(); all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("agents listed: %v, want %v among them", got, ids)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAgentsFoundFromTheirPodsOverTLS: agents found from pods are dialed
// by IP over TLS, and their certificate names only the agents' Service:
// with --agent-server-name the controller verifies that name, and a
// sandbox runs there.
func TestAgentsFoundFromTheirPodsOverTLS(t *testing.T) {
	_, cns := rig.Containerd(t)
	store := append(kubeStoreArgs(t), "--leader-elect=false")
	pods := newPodAgents(t, store[slices.Index(store, "--kubeconfig")+1], cns)
	pods.tls = newAgentTLS(t, "fsb-agent.fsb-system.svc")
	pod, agent := pods.add("agent-tls", "")

	ctrl, server := newControllerProcWith(t, store, pods.dir, agent, append(slices.Clone(fastLifecycle),
		"--agent-pod-selector", agentPodSelector, "--agent-pod-namespace", pods.ns, "--agent-port", fmt.Sprint(pods.port),
		"--agent-ca-file", pods.tls.caFile, "--agent-server-name", pods.tls.name)...)
	i := slices.Index(ctrl.args, "--agents")
	ctrl.args = slices.Delete(ctrl.args, i, i+2)
	ctrl.start()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller log:\n%s", ctrl.log.String())
		}
	})
	if log := ctrl.log.String(); !strings.Contains(log, `"address":"https://`+pod.Status.PodIP+":") {
		t.Errorf("the agent is not dialed at https:// and its pod's IP:\n%s", log)
	}
	out := mustRunCtl(t, server, "user-token-1", "run", "over-tls", "--image", rig.ImageRef, "--", "sh", "-c", "echo hello over tls; sleep 60")
	if !strings.Contains(out, "over-tls") {
		t.Errorf("run: %s", out)
	}
	// A FAST create answers once the task runs: its first line may reach
	// the log file a moment later.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		logs := mustRunCtl(t, server, "user-token-1", "logs", "over-tls")
		if strings.Contains(logs, "hello over tls") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("logs over TLS 10s after the create: %q", logs)
		}
	}
	mustRunCtl(t, server, "user-token-1", "delete", "over-tls")
}
