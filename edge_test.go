//go:build !fsbhelper

package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// These tests try the servers' edge as a hostile caller would, on the real
// agent and controller processes.

// edgeServer is one server under test: where it listens, a procedure to
// call, and a call that a valid token makes.
type edgeServer struct {
	addr      string // host:port of the API
	procedure string // e.g. /fsb.v1.AgentService/GetStatus
	served    func(t *testing.T) bool
	pid       int
}

// edgeServers starts an agent and a controller over it with extra flags
// on both, and returns them by name.
func edgeServers(t *testing.T, agentArgs, ctrlArgs []string) map[string]edgeServer {
	t.Helper()
	_, ns := rig.Containerd(t)
	dir := t.TempDir()
	a := startAgent(t, ns, "agent-edge", dir, agentArgs...)
	ctrl, server := newControllerProc(t, dir, a, ctrlArgs...)
	ctrl.start()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller log:\n%s\nagent log:\n%s", ctrl.log.String(), a.stderr.String())
		}
	})
	post := func(url, token string) bool {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("{}"))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		// A connection of its own, as a new client's would be.
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
		resp, err := c.Do(req)
		if err != nil {
			t.Logf("%s: %v", url, err)
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	return map[string]edgeServer{
		"agent": {
			addr: strings.TrimPrefix(a.base, "http://"), procedure: "/fsb.v1.AgentService/GetStatus", pid: a.cmd.Process.Pid,
			served: func(t *testing.T) bool { return post(a.base+"/fsb.v1.AgentService/GetStatus", a.token) },
		},
		"controller": {
			addr: strings.TrimPrefix(server, "http://"), procedure: "/fsb.v1.FastPathService/ListSandboxes", pid: ctrl.cmd.Process.Pid,
			served: func(t *testing.T) bool { return post(server+"/fsb.v1.FastPathService/ListSandboxes", "user-token-1") },
		},
	}
}

// isClosed reports whether the peer has closed conn, waiting until
// deadline at most.
func isClosed(conn net.Conn, deadline time.Time) bool {
	_ = conn.SetReadDeadline(deadline)
	buf := make([]byte, 4096)
	for {
		_, err := conn.Read(buf) // skips any answer (a 401) before the close
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return false
		}
		if err != nil {
			return true
		}
	}
}

// TestSlowUnauthenticatedConnectionsAreClosed opens 50 connections without
// a token to the agent and to the controller: half send half a header, the
// others a full header and then drip the body. Past the bound of 20 the
// oldest are closed at once, the rest once the unauthenticated timeout
// has passed, and a client with a token is served all along.
func TestSlowUnauthenticatedConnectionsAreClosed(t *testing.T) {
	const (
		conns   = 50
		bound   = 20
		timeout = 4 * time.Second
	)
	flags := []string{"--max-unauthenticated-connections", fmt.Sprint(bound), "--unauthenticated-timeout", timeout.String()}
	for name, s := range edgeServers(t, flags, flags) {
		t.Run(name, func(t *testing.T) {
			opened := time.Now()
			var open []net.Conn
			for i := range conns {
				conn, err := net.Dial("tcp", s.addr)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { conn.Close() })
				if i%2 == 0 {
					fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\n", s.procedure)
				} else {
					fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{", s.procedure)
				}
				open = append(open, conn)
			}
			if !s.served(t) {
				t.Error("a client with a token was not served during the flood")
			}
			// The oldest 30 went well before the timeout: the bound.
			for i, conn := range open[:conns-bound] {
				if !isClosed(conn, opened.Add(timeout*3/4)) {
					t.Fatalf("connection %d of %d was still open %v after the flood began, with a bound of %d", i+1, conns, time.Since(opened), bound)
				}
			}
			// The newest 20 go once the timeout has passed.
			for i, conn := range open[conns-bound:] {
				if !isClosed(conn, opened.Add(timeout+5*time.Second)) {
					t.Fatalf("connection %d was still open %v after it was opened without a token", conns-bound+i+1, time.Since(opened))
				}
			}
			if time.Since(opened) < timeout*3/4 {
				t.Errorf("the last connections were closed after %v, before the timeout", time.Since(opened))
			}
			if !s.served(t) {
				t.Error("a client with a token was not served after the flood")
			}
		})
	}
}

// memory reads a process's resident set and its peak from /proc, in bytes.
func memory(t *testing.T, pid int) (rss, hwm int64) {
	t.Helper()
	return procStatusKB(t, pid, "VmRSS") << 10, procStatusKB(t, pid, "VmHWM") << 10
}

// repeat is an endless stream of one byte.
type repeat byte

func (r repeat) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// TestHugeBodiesWithoutTokenAreNotRead sends four 60 MB requests at once,
// with no token, to the agent and to the controller. Their read limit is
// set far above 60 MB, so only the token check before the body keeps them
// from reading it: each answers 401 while its memory grows by less than
// 20 MB.
func TestHugeBodiesWithoutTokenAreNotRead(t *testing.T) {
	const (
		bodies = 4
		size   = 60 << 20
		grow   = 20 << 20
	)
	limit := []string{"--max-request-bytes", fmt.Sprint(256 << 20)}
	for name, s := range edgeServers(t, limit, limit) {
		t.Run(name, func(t *testing.T) {
			rss0, hwm0 := memory(t, s.pid)
			var g errgroup.Group
			for range bodies {
				g.Go(func() error {
					head, tail := `{"name":"x","spec":{"workingDir":"`, `"}}`
					body := io.MultiReader(strings.NewReader(head), io.LimitReader(repeat('a'), size), strings.NewReader(tail))
					req, _ := http.NewRequest(http.MethodPost, "http://"+s.addr+s.procedure, body)
					req.Header.Set("Content-Type", "application/json")
					req.ContentLength = int64(len(head) + size + len(tail))
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						return err
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusUnauthorized {
						return fmt.Errorf("HTTP %d, want 401", resp.StatusCode)
					}
					return nil
				})
			}
			if err := g.Wait(); err != nil {
				t.Error(err)
			}
			rss1, hwm1 := memory(t, s.pid)
			t.Logf("RSS %d → %d MB, peak %d → %d MB", rss0>>20, rss1>>20, hwm0>>20, hwm1>>20)
			if rss1-rss0 >= grow || hwm1-max(hwm0, rss0) >= grow {
				t.Errorf("memory grew by %d MB (peak by %d MB) on four bodies it should not have read, want < %d MB",
					(rss1-rss0)>>20, (hwm1-hwm0)>>20, grow>>20)
			}
			if !s.served(t) {
				t.Error("a client with a token was not served afterwards")
			}
		})
	}
}

// writeFile writes a 0600 file named name under dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTokenRotation rotates the agent token as docs/security.md says: the
// agent's file holds the new and the old token, and a controller that
// still sends the old one and one whose file already puts the new one
// first (of two) both create sandboxes on it.
func TestTokenRotation(t *testing.T) {
	_, ns := rig.Containerd(t)
	dir := t.TempDir()
	a := startAgent(t, ns, "agent-rotation", dir, "--token-file", writeFile(t, dir, "agent-tokens", "new-token\nold-token\n"))
	for i, sender := range []string{"old-token\n", "new-token\nold-token\n"} {
		cdir := t.TempDir()
		ctrl, server := newControllerProc(t, cdir, a, "--agent-token-file", writeFile(t, cdir, "agent-token", sender))
		ctrl.start()
		name := fmt.Sprintf("rotation-%d", i)
		if out, errOut, code := runCtl(t, server, "user-token-1", "run", name, "--image", rig.ImageRef, "--", "true"); code != 0 {
			t.Errorf("the controller sending %q could not create a sandbox: exit %d\n%s%s\ncontroller log:\n%s",
				sender, code, out, errOut, ctrl.log.String())
		}
		ctrl.kill()
	}
}

// TestMetricsAndPprofListenOnLoopback: by default /metrics of the agent
// and of the controller listen on 127.0.0.1 and pprof is off; an address
// given as a port only stays on loopback too.
func TestMetricsAndPprofListenOnLoopback(t *testing.T) {
	for _, role := range []string{"agent", "controller"} {
		help, _ := fsb(t, role, "--help")
		for _, line := range strings.Split(help, "\n") {
			line = strings.TrimSpace(line)
			switch {
			case strings.HasPrefix(line, "--metrics-bind-address") && !strings.Contains(line, `(default: "127.0.0.1:`):
				t.Errorf("fsb %s: /metrics does not default to loopback:\n%s", role, line)
			case strings.HasPrefix(line, "--pprof-address") && strings.Contains(line, "(default:"):
				t.Errorf("fsb %s: pprof is on by default:\n%s", role, line)
			}
		}
		if !strings.Contains(help, "--metrics-bind-address") || !strings.Contains(help, "--pprof-address") {
			t.Errorf("fsb %s has no --metrics-bind-address or --pprof-address:\n%s", role, help)
		}
	}

	_, ns := rig.Containerd(t)
	metrics, pprof := freePort(t), freePort(t)
	a := startAgent(t, ns, "agent-loopback", t.TempDir(),
		"--metrics-bind-address", fmt.Sprint(metrics), "--pprof-address", fmt.Sprint(pprof))
	for port, path := range map[int]string{metrics: "/metrics", pprof: "/debug/pprof/"} {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
		if err != nil {
			t.Fatalf("%s on 127.0.0.1:%d: %v", path, port, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %s", path, resp.Status)
		}
		// Not on the machine's other addresses.
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			t.Fatal(err)
		}
		for _, addr := range addrs {
			ip, ok := addr.(*net.IPNet)
			if !ok || ip.IP.IsLoopback() || ip.IP.IsLinkLocalUnicast() {
				continue
			}
			if conn, err := net.DialTimeout("tcp", net.JoinHostPort(ip.IP.String(), fmt.Sprint(port)), time.Second); err == nil {
				conn.Close()
				t.Errorf("%s answers on %s, not only on loopback", path, ip.IP)
			}
		}
	}
	// And no longer on the API's port, where a token guards everything else.
	resp, err := http.Get(a.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("the agent's API port serves /metrics: %s", resp.Status)
	}
}

// TestUpWritesTokenFiles0600 runs the token writer of scripts/up.sh (what
// `make up` runs) under a permissive umask: the token files it writes are
// 0600, and a second run keeps the token.
func TestUpWritesTokenFiles0600(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "user-token")
	script := `set -euo pipefail; umask 022; source <(sed -n '/^token() {$/,/^}$/p' scripts/up.sh); token "$1"; token "$1"`
	for range 2 {
		if out, err := exec.Command("bash", "-c", script, "bash", file).CombinedOutput(); err != nil {
			t.Fatalf("token: %v\n%s", err, out)
		}
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("scripts/up.sh wrote its token file %v, want -rw-------", fi.Mode().Perm())
	}
	tok, err := auth.ReadTokenFile(file)
	if err != nil || len(tok) < 32 {
		t.Errorf("token %q, %v: want a random token of 32 characters or more", tok, err)
	}
}

// startTLSAgent starts `fsb agent` serving TLS with a certificate of ca,
// and waits until it is ready over TLS.
func startTLSAgent(t *testing.T, ns, dir string, ca *rig.CA) *agentProc {
	t.Helper()
	certPEM, keyPEM := ca.Issue(t, nil, net.IPv4(127, 0, 0, 1))
	a := launchAgent(t, "https", freePort(t), ns, "agent-tls", dir,
		"--tls-cert-file", writeFile(t, dir, "agent.crt", string(certPEM)), "--tls-key-file", writeFile(t, dir, "agent.key", string(keyPEM)))
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	waitReady(t, &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}, a.base+"/readyz", a.stderr)
	return a
}

// TestControllerReachesAgentOverTLS: an agent given as https:// is
// reached over TLS (HTTP/2) when --agent-ca-file trusts its certificate,
// and a create works; with a CA that did not sign it, the controller
// says why it cannot reach the agent.
func TestControllerReachesAgentOverTLS(t *testing.T) {
	_, ns := rig.Containerd(t)
	dir := t.TempDir()
	ca := rig.NewCA(t)
	a := startTLSAgent(t, ns, dir, ca)

	cdir := t.TempDir()
	ctrl, server := newControllerProc(t, cdir, a, "--agent-token-file", filepath.Join(dir, "token"),
		"--agent-ca-file", writeFile(t, cdir, "ca.crt", string(ca.PEM)))
	ctrl.start()
	out := mustRunCtl(t, server, "user-token-1", "run", "over-tls", "--image", rig.ImageRef, "--", "sh", "-c", "echo hello over tls; sleep 60")
	if !strings.Contains(out, "over-tls") {
		t.Errorf("run: %s", out)
	}
	if logs := mustRunCtl(t, server, "user-token-1", "logs", "over-tls"); !strings.Contains(logs, "hello over tls") {
		t.Errorf("logs over TLS: %q", logs)
	}
	mustRunCtl(t, server, "user-token-1", "delete", "over-tls")
	ctrl.kill()

	wrong := t.TempDir()
	ctrl, server = newControllerProc(t, wrong, a, "--agent-token-file", filepath.Join(dir, "token"),
		"--agent-ca-file", writeFile(t, wrong, "ca.crt", string(rig.NewCA(t).PEM)))
	ctrl.start()
	if _, errOut, code := runCtl(t, server, "user-token-1", "run", "wrong-ca", "--image", rig.ImageRef, "--", "true"); code == 0 {
		t.Error("a sandbox was created on an agent whose certificate the controller does not trust")
	} else {
		t.Logf("fsb ctl run: %s", errOut)
	}
	if log := ctrl.log.String(); !strings.Contains(log, "agent unreachable") || !strings.Contains(log, "certificate signed by unknown authority") {
		t.Errorf("the controller does not say why it cannot reach the agent:\n%s", log)
	}
}

// TestUpKubeFailureStopsItsRig runs the Kubernetes part of scripts/up.sh
// (make up KUBE=1) after a containerd this run started, with kube.sh and
// rig.sh replaced by stubs: when the API server cannot even be started
// (kube-apiserver does not build, or another program holds one of its
// ports), up.sh stops the containerd it started, as it does on every other
// failure, instead of leaving it running.
func TestUpKubeFailureStopsItsRig(t *testing.T) {
	for _, tc := range []struct {
		name      string
		build     string // the stub kube.sh build's body
		portTaken bool
	}{
		{"build fails", `exit 1`, false},
		{"port taken", `echo "$FAKE/bin"`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := t.TempDir()
			if err := os.MkdirAll(filepath.Join(fake, "scripts"), 0o755); err != nil {
				t.Fatal(err)
			}
			stubs := map[string]string{
				"kube.sh": "#!/bin/bash\ncase $1 in build) " + tc.build + " ;; start) exit 0 ;; stop) touch \"$FAKE/kube-stopped\" ;; esac\n",
				"rig.sh":  "#!/bin/bash\n[[ $1 == down ]] && touch \"$FAKE/rig-stopped\"\nexit 0\n",
			}
			for name, body := range stubs {
				if err := os.WriteFile(filepath.Join(fake, "scripts", name), []byte(body), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			holder := "holder() { return 1; }"
			if tc.portTaken {
				holder = `holder() { echo "another program"; }`
			}
			script := `set -euo pipefail
export FAKE=$1
repo_root=$FAKE kube_dir=$FAKE/kube up_dir=$FAKE/up
KUBE_API_PORT=6443 ETCD_PORT=2479 ETCD_PEER_PORT=2480 READY_TIMEOUT=1
started_rig=true started_kube=false started=() kube_bin=
log() { :; }
die() { echo "die: $*" >&2; exit 1; }
stop() { :; }
` + holder + `
source <(sed -n -e '/^undo() {$/,/^}$/p' -e '/^kube_running() {$/,/^}$/p' -e '/^start_kube() {$/,/^}$/p' -e '/^check_free() {$/,/^}$/p' scripts/up.sh)
start_kube`
			out, err := exec.Command("bash", "-c", script, "bash", fake).CombinedOutput()
			if err == nil {
				t.Fatalf("start_kube succeeded:\n%s", out)
			}
			if !strings.Contains(string(out), "die: ") {
				t.Fatalf("start_kube failed without its message: %v\n%s", err, out)
			}
			if _, err := os.Stat(filepath.Join(fake, "rig-stopped")); err != nil {
				t.Errorf("up.sh left the containerd it started running (no rig.sh down):\n%s", out)
			}
		})
	}
}

// TestTestShStopsAKubeStartedDuringItsFailure runs scripts/test.sh with
// rig.sh and kube.sh replaced by stubs: rig.sh up fails while kube.sh start
// is still getting ready (as while it installs etcd on a fresh machine,
// before its directory exists). The API server it then starts must not
// outlive test.sh: test.sh waits for the start it began and stops it.
func TestTestShStopsAKubeStartedDuringItsFailure(t *testing.T) {
	fake := t.TempDir()
	for _, d := range []string{"scripts", "bin"} {
		if err := os.MkdirAll(filepath.Join(fake, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	testSh, err := os.ReadFile("scripts/test.sh")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"scripts/test.sh": string(testSh),
		"scripts/rig.sh":  "#!/bin/bash\ncase $1 in up) sleep 0.3; exit 1 ;; down) rm -rf \"$2\" ;; esac\n",
		// start: a second of getting ready before DIR exists, then a
		// daemon started under DIR's lock; stop: under the lock, as
		// scripts/kube.sh does.
		"scripts/kube.sh": `#!/bin/bash
set -e
case $1 in
build) echo "$FAKE/bin" ;;
start)
	sleep 1
	mkdir -p "$2"
	touch "$2/.fsb-kube"
	exec 9>"$2/.lock"
	flock 9
	sleep 300 </dev/null >/dev/null 2>&1 9>&- &
	echo $! >"$2/daemon.pid"
	echo $! >"$FAKE/daemon.pid"
	echo 'export FSB_KUBECONFIG=x FSB_KUBE_BIN=x' >"$2/env"
	;;
stop)
	[[ -d $2 ]] || exit 0
	exec 9>"$2/.lock"
	flock -w 60 9
	if [[ -r $2/daemon.pid ]]; then kill "$(<"$2/daemon.pid")" || true; fi
	rm -rf "$2"
	;;
esac
`,
		"bin/fsb":        "#!/bin/sh\n",
		"bin/fsb-helper": "#!/bin/sh\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(fake, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	daemon := func() (int, bool) {
		b, err := os.ReadFile(filepath.Join(fake, "daemon.pid"))
		if err != nil {
			return 0, false
		}
		var pid int
		if _, err := fmt.Sscan(string(b), &pid); err != nil || pid <= 0 {
			return 0, false
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return pid, false
		}
		s := string(stat)
		return pid, !strings.HasPrefix(s[strings.LastIndexByte(s, ')')+1:], " Z")
	}
	t.Cleanup(func() {
		if pid, alive := daemon(); alive {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	cmd := exec.Command("bash", filepath.Join(fake, "scripts", "test.sh"), "./...")
	cmd.Env = append(os.Environ(), "FAKE="+fake)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("test.sh succeeded with a failing rig.sh up:\n%s", out)
	}
	// An orphaned start would bring its daemon up about a second after
	// test.sh began.
	time.Sleep(time.Until(start.Add(2 * time.Second)))
	if pid, alive := daemon(); alive {
		t.Errorf("the API server kube.sh start brought up (pid %d) outlived test.sh:\n%s", pid, out)
	}
}
