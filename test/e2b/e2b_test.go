// Package e2b_test drives Fast Sandbox with E2B's official JavaScript SDK
// (npm e2b, pinned in package-lock.json), unchanged: the node test suite
// sdk.test.mjs, examples/e2b/hello.mjs and the latency measurement
// latency.mjs, against an `fsb agent` and an `fsb controller` serving E2B's
// API that this test starts on the rig.
//
// The SDK talks to E2B's cloud unless E2B_API_URL and E2B_SANDBOX_URL say
// otherwise, so node runs where a mistake cannot reach anything else: a
// network namespace of the test's own that holds only a loopback, shared
// with the two servers (and, through the agent, with every sandbox). The
// agent reaches containerd through its unix socket, which no network
// namespace hides.
//
// Node and npm are required, never skipped: `make test` installs them, and
// this test runs `npm ci` when node_modules is missing or older than
// package-lock.json.
package e2b_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"golang.org/x/sys/unix"

	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/testimage"
)

const (
	// envE2BImageTar is the rig's archive of the template image (see
	// scripts/rig.sh).
	envE2BImageTar = "FSB_E2B_IMAGE_TAR"

	// exampleDir holds examples/e2b/hello.mjs and its own package.
	exampleDir = "../../examples/e2b"

	// e2bNamespace is the Fast Sandbox namespace the test's API key maps to.
	e2bNamespace = "e2b-sdk"

	// The servers' ports. The network namespace is the test's own, so
	// nothing else can hold them.
	agentPort      = 7001
	agentMetrics   = 7002
	fastPathPort   = 7010
	healthPort     = 7011
	metricsPort    = 7012
	e2bPort        = 3000
	readyTimeout   = 30 * time.Second
	npmTimeout     = 5 * time.Minute
	nodeTimeout    = 10 * time.Minute
	latencySamples = 50

	// logTail is how much of each server's log a failure shows.
	logTail = 150
)

// minNode is the oldest node the SDK supports (its package.json's
// engines: >=20.18.1 <21 || >=22).
var minNode = [3]int{20, 18, 1}

// TestSDK runs the SDK's tests, the example and the latency measurement
// against one controller and agent.
func TestSDK(t *testing.T) {
	node := nodeTool(t)
	npmCI(t, ".")
	npmCI(t, exampleDir)
	s := startServers(t, node)

	t.Run("suite", func(t *testing.T) {
		out := s.node(t, ".", "--test", "--test-reporter=tap", "--test-concurrency=1", "sdk.test.mjs")
		t.Log("node --test sdk.test.mjs:\n" + summary(out))
	})
	t.Run("hello", func(t *testing.T) {
		out := s.node(t, exampleDir, "hello.mjs")
		t.Log("node hello.mjs:\n" + out)
		if !strings.Contains(out, `echo hi -> "hi\n"`) || !strings.HasSuffix(strings.TrimSpace(out), "ok") {
			t.Errorf("hello.mjs did not say hi and ok:\n%s", out)
		}
	})
	// Measures and prints (go test -v), asserts nothing about time.
	t.Run("latency", func(t *testing.T) {
		t.Log("\n" + s.node(t, ".", "latency.mjs", strconv.Itoa(latencySamples)))
	})
}

// nodeTool returns the path of node, failing the test with the command
// that installs it when node or npm is missing or too old for the SDK.
func nodeTool(t *testing.T) string {
	t.Helper()
	const advice = "`make test` installs them (Debian: apt-get install nodejs npm)"
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed: %v; %s", err, advice)
	}
	if _, err := exec.LookPath("npm"); err != nil {
		t.Fatalf("npm is not installed: %v; %s", err, advice)
	}
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		t.Fatalf("node --version: %v", err)
	}
	version := strings.TrimSpace(string(out))
	var v [3]int
	if _, err := fmt.Sscanf(version, "v%d.%d.%d", &v[0], &v[1], &v[2]); err != nil {
		t.Fatalf("node --version printed %q: %v", version, err)
	}
	if older(v, minNode) || v[0] == 21 {
		t.Fatalf("node %s is too old for E2B's SDK (needs >=20.18.1 <21 or >=22); %s", version, advice)
	}
	return node
}

func older(a, b [3]int) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

// npmCI runs `npm ci` in dir unless its node_modules was installed from
// the package-lock.json it has now. An install that fails fails the test:
// a clean clone (CI) must install.
func npmCI(t *testing.T, dir string) {
	t.Helper()
	lock, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		t.Fatalf("%v: the SDK's packages are pinned there", err)
	}
	sum := sha256.Sum256(lock)
	want := hex.EncodeToString(sum[:]) + "\n"
	// npm ci starts by removing node_modules, so the stamp of a finished
	// install is gone whenever one was cut short.
	stamp := filepath.Join(dir, "node_modules", ".fsb-installed-lock")
	if got, err := os.ReadFile(stamp); err == nil && string(got) == want {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), npmTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
	}
	t.Logf("npm ci in %s: %s", dir, time.Since(start).Round(time.Millisecond))
	if err := os.WriteFile(stamp, []byte(want), 0o644); err != nil {
		t.Fatal(err)
	}
}

// servers is an agent and a controller serving E2B's API inside a network
// namespace of the test's own.
type servers struct {
	netns    string // the namespace's path, for nsenter
	nodePath string
	env      []string // what node gets: no variable of the test's but PATH
	agentLog *rig.Buffer
	ctrlLog  *rig.Buffer
}

// startServers starts an agent on a containerd namespace holding the
// template image and a controller with one E2B API key, both in a new
// network namespace, and waits until they are ready.
func startServers(t *testing.T, node string) *servers {
	t.Helper()
	fsb := rig.FsbBinary(t)
	cd, ns := rig.Containerd(t)
	importImage(t, cd, ns, rig.Env(t, envE2BImageTar))
	s := &servers{netns: newNetns(t), nodePath: node, agentLog: &rig.Buffer{}, ctrlLog: &rig.Buffer{}}
	client := &http.Client{Transport: &http.Transport{DialContext: s.dial}, Timeout: 2 * time.Second}

	dir := t.TempDir()
	key := "e2b_" + randomHex(t, 20)
	files := map[string]string{
		"agent-token": randomHex(t, 16) + "\n",
		"user-token":  randomHex(t, 16) + "\n",
		"e2b-keys":    "# written by test/e2b: key namespace\n" + key + " " + e2bNamespace + "\n",
		"templates.yaml": "templates:\n" +
			"  base:\n" +
			"    image: " + testimage.E2BRef + "\n" +
			"    runtime: runc\n" +
			"    resources: {cpu: \"1\", memory: 512Mi}\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	socket := rig.Env(t, rig.EnvSocket)
	agent := s.start(t, "agent", s.agentLog, fsb, "agent",
		"--bind-address", "127.0.0.1", "--http-port", strconv.Itoa(agentPort),
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", agentMetrics),
		"--containerd-socket", socket, "--containerd-namespace", ns,
		// One link dir per containerd daemon, as the root package's
		// agents use it.
		"--link-dir", filepath.Join(filepath.Dir(socket), "link"),
		"--agent-id", "e2b-agent", "--token-file", filepath.Join(dir, "agent-token"),
		"--log-dir", filepath.Join(dir, "logs"), "--log-format", "json")
	t.Cleanup(func() {
		// Before the test's directories go: the sandboxes' log drivers
		// write into the agent's log dir until their containers are gone.
		agent.stop()
		if err := rig.Cleanup(cd, ns); err != nil {
			t.Logf("remove the sandboxes of %s: %v", ns, err)
		}
	})
	s.waitReady(t, client, fmt.Sprintf("http://127.0.0.1:%d/readyz", agentPort), "agent", agent, s.agentLog)

	ctrl := s.start(t, "controller", s.ctrlLog, fsb, "controller",
		"--fastpath-bind-address", fmt.Sprintf("127.0.0.1:%d", fastPathPort),
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", healthPort),
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", metricsPort),
		"--agents", fmt.Sprintf("127.0.0.1:%d", agentPort),
		"--user-token-file", filepath.Join(dir, "user-token"),
		"--agent-token-file", filepath.Join(dir, "agent-token"),
		"--store", "embedded", "--data-dir", filepath.Join(dir, "data"),
		"--e2b-bind-address", fmt.Sprintf("127.0.0.1:%d", e2bPort),
		"--e2b-api-keys-file", filepath.Join(dir, "e2b-keys"),
		"--e2b-templates-file", filepath.Join(dir, "templates.yaml"),
		"--log-format", "json")
	t.Cleanup(ctrl.stop)
	s.waitReady(t, client, fmt.Sprintf("http://127.0.0.1:%d/readyz", healthPort), "controller", ctrl, s.ctrlLog)
	s.waitListening(t, e2bPort, "controller's E2B API", ctrl, s.ctrlLog)

	url := fmt.Sprintf("http://127.0.0.1:%d", e2bPort)
	s.env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + t.TempDir(),
		"E2B_API_URL=" + url,
		"E2B_SANDBOX_URL=" + url,
		"E2B_API_KEY=" + key,
	}
	return s
}

// proc is a server the test started.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// exited says whether the server has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// state says whether the server runs, or how it ended.
func (p *proc) state() string {
	if !p.exited() {
		return "still running"
	}
	return "exited: " + p.cmd.ProcessState.String()
}

// stop kills the server and waits until it is gone.
func (p *proc) stop() {
	p.cmd.Process.Kill()
	<-p.done
}

// start starts name (a server) inside the network namespace, its output
// into log; the caller stops it.
func (s *servers) start(t *testing.T, what string, log *rig.Buffer, name string, args ...string) *proc {
	t.Helper()
	cmd := s.command(context.Background(), name, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the %s: %v", what, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	return p
}

// command returns name run inside the network namespace. nsenter moves
// itself there and then becomes name, so the process is the server itself
// and its sandboxes join that namespace.
func (s *servers) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + s.netns, "--", name}, args...)...)
}

// node runs node with args in dir inside the network namespace and returns
// what it printed, failing the test with that (node's TAP output for a
// test run) and the servers' logs when it fails.
func (s *servers) node(t *testing.T, dir string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), nodeTimeout)
	defer cancel()
	cmd := s.command(ctx, s.nodePath, args...)
	cmd.Dir = dir
	cmd.Env = s.env
	var out rig.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("node %s (in %s): %v after %s\n--- node's output ---\n%s\n--- controller log (last %d lines) ---\n%s\n--- agent log (last %d lines) ---\n%s",
			strings.Join(args, " "), dir, err, time.Since(start).Round(time.Millisecond), out.String(),
			logTail, tail(s.ctrlLog.String(), logTail), logTail, tail(s.agentLog.String(), logTail))
	}
	return out.String()
}

// waitReady waits until url answers 200 from inside the namespace, and
// fails at once when p exits.
func (s *servers) waitReady(t *testing.T, client *http.Client, url, what string, p *proc, log *rig.Buffer) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("the %s never became ready (%s: %v, %s); its log:\n%s", what, url, err, p.state(), tail(log.String(), logTail))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitListening waits until something accepts connections on port inside
// the namespace, and fails at once when p exits.
func (s *servers) waitListening(t *testing.T, port int, what string, p *proc, log *rig.Buffer) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := s.dial(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
		cancel()
		if err == nil {
			c.Close()
			return
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("the %s never listened on port %d (%v, %s); the controller's log:\n%s", what, port, err, p.state(), tail(log.String(), logTail))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dial connects to addr inside the namespace. A socket belongs to the
// network namespace of the thread that makes it, so the dial runs on a
// thread moved there and back; a thread that cannot be moved back is not
// handed back to the runtime (its goroutine ends locked, and Go ends the
// thread with it).
func (s *servers) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		c, back, err := dialIn(ctx, s.netns, network, addr)
		if back {
			runtime.UnlockOSThread()
		}
		done <- result{c, err}
	}()
	r := <-done
	return r.c, r.err
}

// dialIn dials from netns on the calling (locked) thread and says whether
// the thread is back in its own namespace.
func dialIn(ctx context.Context, netns, network, addr string) (c net.Conn, back bool, err error) {
	own, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, true, err
	}
	defer own.Close()
	target, err := os.Open(netns)
	if err != nil {
		return nil, true, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("enter %s: %w", netns, err)
	}
	c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
	return c, unix.Setns(int(own.Fd()), unix.CLONE_NEWNET) == nil, err
}

// newNetns makes a network namespace holding only a loopback, up, and
// returns its path. A sleeping process holds it; the namespace goes away
// with the last process in it once the test ends.
func newNetns(t *testing.T) string {
	t.Helper()
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Fatalf("ip (iproute2) is not installed: %v; scripts/rig.sh installs it", err)
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Fatalf("nsenter (util-linux) is not installed: %v", err)
	}
	cmd := exec.Command("/bin/sh", "-c", `"$1" link set lo up && echo up && exec sleep 2147483647`, "netns-holder", ip)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	var stderr rig.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("make a network namespace (as root: `make test`): %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "up\n" {
		t.Fatalf("bring up the loopback of the test's network namespace: %q, %v: %s", line, err, stderr.String())
	}
	return fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)
}

// importImage imports the archive into containerd namespace ns and unpacks
// its images, as the rig does with the busybox image.
func importImage(t *testing.T, client *containerd.Client, ns, archive string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), ns), 2*time.Minute)
	defer cancel()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatalf("%v (%s): run `make test`, whose rig writes it", err, envE2BImageTar)
	}
	defer f.Close()
	imgs, err := client.Import(ctx, f)
	if err != nil {
		t.Fatalf("import %s: %v", archive, err)
	}
	found := false
	for _, img := range imgs {
		found = found || img.Name == testimage.E2BRef
		if err := containerd.NewImage(client, img).Unpack(ctx, rig.Snapshotter); err != nil {
			t.Fatalf("unpack %s: %v", img.Name, err)
		}
	}
	if !found {
		t.Fatalf("%s holds no image named %s", archive, testimage.E2BRef)
	}
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// summary returns the names and results of the tests in node's TAP
// output and its closing counts.
func summary(tap string) string {
	var b strings.Builder
	for _, l := range strings.Split(tap, "\n") {
		trimmed := strings.TrimSpace(l)
		if strings.HasPrefix(trimmed, "ok ") || strings.HasPrefix(trimmed, "not ok ") || strings.HasPrefix(l, "# ") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
