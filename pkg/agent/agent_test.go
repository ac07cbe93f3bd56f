package agent

import (
	"context"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/runtime/v2/runc/options"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// criLine is one record of a log file: time, stream, tag, text.
var criLine = regexp.MustCompile(`^(\S+) (stdout|stderr) ([FP]) (.*)$`)

func TestLogsCarryStreamAndTimestamp(t *testing.T) {
	h := newHarness(t)
	before := time.Now()
	sb := h.create(spec("echo to-out; echo to-err >&2"))
	h.waitPhase(sb.GetSandboxId(), fsbv1.Phase_PHASE_SUCCEEDED)
	raw := h.waitLog(sb, "to-err")

	seen := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(raw), "\n") {
		m := criLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("log line %q is not TIME STREAM TAG TEXT", line)
		}
		ts, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			t.Fatalf("log line %q: time: %v", line, err)
		}
		if ts.Before(before.Add(-time.Second)) || ts.After(time.Now().Add(time.Second)) {
			t.Errorf("log line %q: time %v is outside the test's run", line, ts)
		}
		seen[m[4]] = m[2]
	}
	if seen["to-out"] != "stdout" || seen["to-err"] != "stderr" {
		t.Errorf("streams = %v, want to-out on stdout and to-err on stderr", seen)
	}

	// The same lines through the API.
	stream, err := h.client.StreamLogs(context.Background(), connect.NewRequest(&fsbv1.AgentServiceStreamLogsRequest{SandboxId: sb.GetSandboxId()}))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for stream.Receive() {
		for _, l := range stream.Msg().GetLines() {
			got = append(got, l.GetStream()+":"+l.GetText())
			if l.GetTime().AsTime().Before(before.Add(-time.Second)) {
				t.Errorf("StreamLogs line %q has time %v", l.GetText(), l.GetTime().AsTime())
			}
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	// stdout and stderr are two pipes: their lines may interleave either way.
	slices.Sort(got)
	if strings.Join(got, ",") != "stderr:to-err,stdout:to-out" {
		t.Errorf("StreamLogs = %v", got)
	}
}

func TestStreamLogsFollowEndsWhenSandboxExits(t *testing.T) {
	h := newHarness(t)
	sb := h.create(spec("for i in 1 2 3; do echo line-$i; sleep 0.3; done"))
	stream, err := h.client.StreamLogs(context.Background(), connect.NewRequest(&fsbv1.AgentServiceStreamLogsRequest{SandboxId: sb.GetSandboxId(), Follow: true}))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for stream.Receive() {
		for _, l := range stream.Msg().GetLines() {
			got = append(got, l.GetText())
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "line-1,line-2,line-3" {
		t.Errorf("followed lines = %v, want line-1..3", got)
	}
}

func TestExitCodeIsReported(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		script string
		phase  fsbv1.Phase
		code   int32
	}{
		{"exit 0", fsbv1.Phase_PHASE_SUCCEEDED, 0},
		{"exit 7", fsbv1.Phase_PHASE_FAILED, 7},
		{"kill -KILL $$", fsbv1.Phase_PHASE_FAILED, 137},
	} {
		sb := h.create(spec(tc.script))
		got := h.waitPhase(sb.GetSandboxId(), tc.phase)
		if got.GetExitCode() != tc.code {
			t.Errorf("%q: exit code %d, want %d", tc.script, got.GetExitCode(), tc.code)
		}
		if got.GetExitTime() == nil {
			t.Errorf("%q: no exit time", tc.script)
		}
	}
}

func TestDeleteEndsSandboxWithSIGTERM(t *testing.T) {
	h := newHarness(t)
	sb := h.create(spec("exec sleep 300"))
	h.waitPhase(sb.GetSandboxId(), fsbv1.Phase_PHASE_RUNNING)

	start := time.Now()
	resp := h.delete(sb.GetSandboxId(), 30)
	took := time.Since(start)
	if took > 10*time.Second {
		t.Errorf("delete took %v: SIGTERM did not end the sandbox", took)
	}
	if len(resp.GetSandboxes()) != 1 {
		t.Fatalf("delete reported %d sandboxes, want 1", len(resp.GetSandboxes()))
	}
	// 143 = 128+SIGTERM, passed on by fsb init; a SIGKILL would give 137.
	if code := resp.GetSandboxes()[0].GetExitCode(); code != 143 {
		t.Errorf("exit code %d, want 143 (ended by SIGTERM, no SIGKILL)", code)
	}
	h.assertGone(sb)
}

// TestDeleteRightAfterStartStillSendsSIGTERM: the kernel drops a signal
// to a PID 1 without a handler for it, and a sandbox's PID 1 installs its
// handler only once it runs (here a shell, as --no-init has it, after a
// pause). A delete right after the start waits for the handler, so the
// SIGTERM ends the sandbox (143) instead of the SIGKILL after the grace
// period (137).
func TestDeleteRightAfterStartStillSendsSIGTERM(t *testing.T) {
	h := newHarness(t)
	s := spec(`sleep 0.2; trap "exit 143" TERM; while :; do sleep 0.05; done`)
	s.NoInit = true
	sb := h.create(s)
	start := time.Now()
	resp := h.delete(sb.GetSandboxId(), 10)
	if len(resp.GetSandboxes()) != 1 {
		t.Fatalf("delete reported %d sandboxes, want 1", len(resp.GetSandboxes()))
	}
	if code := resp.GetSandboxes()[0].GetExitCode(); code != 143 {
		t.Errorf("exit code %d after %v, want 143 (the SIGTERM caught, not a SIGKILL)", code, time.Since(start))
	}
}

func TestDeleteKillsWhatIgnoresSIGTERM(t *testing.T) {
	h := newHarness(t)
	sb := h.create(spec(`trap "" TERM; echo trapped; while :; do sleep 1; done`))
	h.waitLog(sb, "trapped")

	start := time.Now()
	resp := h.delete(sb.GetSandboxId(), 1)
	took := time.Since(start)
	if took < time.Second || took > 15*time.Second {
		t.Errorf("delete took %v, want the 1s grace period and a prompt kill", took)
	}
	if code := resp.GetSandboxes()[0].GetExitCode(); code != 137 {
		t.Errorf("exit code %d, want 137 (SIGKILL)", code)
	}
	h.assertGone(sb)
}

// TestShorterDeleteHurriesOneUnderWay: a delete runs to its end whatever
// its caller does, so a second delete with no grace period brings the
// kill of a first one (a long grace period, its caller gone) forward
// instead of waiting behind it.
func TestShorterDeleteHurriesOneUnderWay(t *testing.T) {
	h := newHarness(t)
	sb := h.create(spec(`trap "" TERM; echo trapped; while :; do sleep 1; done`))
	h.waitLog(sb, "trapped")
	long := int32(120)
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := h.client.DeleteSandbox(ctx, connect.NewRequest(&fsbv1.AgentServiceDeleteSandboxRequest{
			SandboxId: sb.GetSandboxId(), GracePeriodSeconds: &long,
		}))
		first <- err
	}()
	time.Sleep(time.Second) // the first delete has sent its SIGTERM
	cancel()                // and its caller goes away
	<-first
	start := time.Now()
	h.delete(sb.GetSandboxId(), 0)
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("a delete with no grace period took %v behind one with %ds", took, long)
	}
	h.assertGone(sb)
}

func TestDeleteOfWhatIsGoneSucceeds(t *testing.T) {
	h := newHarness(t)
	sb := h.create(spec("exit 0"))
	h.delete(sb.GetSandboxId(), 0)
	if resp := h.delete(sb.GetSandboxId(), 0); len(resp.GetSandboxes()) != 0 {
		t.Errorf("second delete reported %v", resp.GetSandboxes())
	}
	if resp := h.delete("sb-never-made", 0); len(resp.GetSandboxes()) != 0 {
		t.Errorf("delete of an unknown sandbox reported %v", resp.GetSandboxes())
	}
}

// assertGone checks that the sandbox's task, container and snapshot are gone.
func (h *harness) assertGone(sb *fsbv1.AgentSandbox) {
	h.t.Helper()
	ctx := context.Background()
	if _, err := h.cd.LoadContainer(ctx, sb.GetContainerId()); !errdefs.IsNotFound(err) {
		h.t.Errorf("container %s still there (err %v)", sb.GetContainerId(), err)
	}
	sn := h.cd.SnapshotService(rig.Snapshotter)
	if _, err := sn.Stat(ctx, sb.GetContainerId()); !errdefs.IsNotFound(err) {
		h.t.Errorf("snapshot %s still there (err %v)", sb.GetContainerId(), err)
	}
	if h.get(sb.GetSandboxId()) != nil {
		h.t.Errorf("GetStatus still lists %s", sb.GetSandboxId())
	}
}

func TestInitReapsOrphans(t *testing.T) {
	h := newHarness(t)
	// The subshell exits at once, so its background sleep is orphaned and
	// handed to PID 1; once it has exited, nothing may be left a zombie.
	sb := h.create(spec(`(sleep 0.2 &); sleep 1.5
echo "pid1=$(tr '\0' ' ' </proc/1/cmdline | cut -c1-18)"
for f in /proc/[0-9]*/status; do grep -q '^State:.*Z' "$f" 2>/dev/null && echo "Z:$f"; done
echo checked`))
	h.waitPhase(sb.GetSandboxId(), fsbv1.Phase_PHASE_SUCCEEDED)
	out := h.waitLog(sb, "checked")
	if !strings.Contains(out, "pid1=/.fsb/init init --") {
		t.Errorf("PID 1 is not fsb init:\n%s", out)
	}
	if strings.Contains(out, " Z:/proc/") {
		t.Errorf("zombies left:\n%s", out)
	}
}

func TestCrunRunsSandbox(t *testing.T) {
	h := newHarness(t)
	s := spec("echo from-crun")
	s.Runtime = "crun"
	sb := h.create(s)
	h.waitLog(sb, "from-crun")
	c, err := h.cd.LoadContainer(context.Background(), sb.GetContainerId())
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	v, err := typeurl.UnmarshalAny(info.Runtime.Options)
	if err != nil {
		t.Fatal(err)
	}
	if opts, ok := v.(*options.Options); !ok || opts.BinaryName != "crun" {
		t.Errorf("runtime options = %v, want BinaryName crun", v)
	}
}

func TestSandboxIsHardened(t *testing.T) {
	h := newHarness(t)
	sb := h.create(spec("grep -E '^(NoNewPrivs|Seccomp|CapEff):' /proc/self/status; echo done; exec sleep 300"))
	out := h.waitLog(sb, "done")
	for _, want := range []string{
		"NoNewPrivs:\t1",
		"Seccomp:\t2",
		// Docker's default capability set, and no more.
		"CapEff:\t00000000a80425fb",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("sandbox output lacks %q:\n%s", want, out)
		}
	}
	// containerd's default profile, for the native system call ABI only.
	c, err := h.cd.LoadContainer(context.Background(), sb.GetContainerId())
	if err != nil {
		t.Fatal(err)
	}
	oci, err := c.Spec(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sc := oci.Linux.Seccomp; sc == nil || sc.DefaultAction != specs.ActErrno || len(sc.Architectures) != 1 || len(sc.Syscalls) == 0 {
		t.Errorf("seccomp = %+v, want the default allowlist for one ABI", sc)
	}
	// The agent's default pids limit, as the kernel holds it.
	if got := h.cgroupFile(sb, "pids/pids.max"); got != "1024" {
		t.Errorf("pids.max = %q, want 1024", got)
	}
	h.delete(sb.GetSandboxId(), 0)
}

func TestSpecIsApplied(t *testing.T) {
	h := newHarness(t)
	sb := h.create(&fsbv1.SandboxSpec{
		Image:      rig.ImageRef,
		Command:    []string{"sh", "-c"},
		Args:       []string{`echo "foo=$FOO cwd=$(pwd)"; exec sleep 300`},
		Envs:       []*fsbv1.EnvVar{{Name: "FOO", Value: "bar baz"}},
		WorkingDir: "/tmp",
		Resources:  &fsbv1.Resources{Memory: "64Mi", Cpu: "250m", Pids: 50},
	})
	h.waitLog(sb, "foo=bar baz cwd=/tmp")
	for file, want := range map[string]string{
		"memory/memory.limit_in_bytes": "67108864",
		"pids/pids.max":                "50",
		"cpu/cpu.cfs_quota_us":         "25000",
		"cpu/cpu.cfs_period_us":        "100000",
	} {
		if got := h.cgroupFile(sb, file); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	h.delete(sb.GetSandboxId(), 0)
}

// taskCgroup returns the cgroup path of a sandbox's task, as its OCI spec
// names it.
func (h *harness) taskCgroup(sb *fsbv1.AgentSandbox) string {
	h.t.Helper()
	c, err := h.cd.LoadContainer(context.Background(), sb.GetContainerId())
	if err != nil {
		h.t.Fatal(err)
	}
	spec, err := c.Spec(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return spec.Linux.CgroupsPath
}

// cgroupFile reads a running sandbox's cgroup v1 file on the host, where
// containerd places it: /sys/fs/cgroup/<controller>/<namespace>/<container>.
func (h *harness) cgroupFile(sb *fsbv1.AgentSandbox, file string) string {
	h.t.Helper()
	controller, name, _ := strings.Cut(file, "/")
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", controller, h.taskCgroup(sb), name))
	if err != nil {
		h.t.Fatalf("read cgroup: %v", err)
	}
	return strings.TrimSpace(string(b))
}

func TestCreateIsIdempotent(t *testing.T) {
	h := newHarness(t)
	req := &fsbv1.AgentServiceCreateSandboxRequest{SandboxId: "sb-idem", Revision: 1, Namespace: "default", Name: "idem", Spec: spec("sleep 300")}
	first, err := h.client.CreateSandbox(context.Background(), connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	second, err := h.client.CreateSandbox(context.Background(), connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	if first.Msg.GetSandbox().GetContainerId() != second.Msg.GetSandbox().GetContainerId() {
		t.Errorf("container IDs differ: %s, %s", first.Msg.GetSandbox().GetContainerId(), second.Msg.GetSandbox().GetContainerId())
	}
	cs, err := h.cd.Containers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 {
		t.Errorf("%d containers, want 1", len(cs))
	}
	h.delete("sb-idem", 0)
}

func TestStatusDescribesAgent(t *testing.T) {
	h := newHarness(t)
	s := spec("sleep 300")
	s.ExposedPorts = []int32{8080}
	sb := h.create(s)
	resp, err := h.client.GetStatus(context.Background(), connect.NewRequest(&fsbv1.GetStatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	st := resp.Msg.GetStatus()
	if st.GetAgentId() != h.agentID || st.GetCapacity() != 5 || st.GetAdvertiseAddress() != "127.0.0.1" || st.GetNodeName() != "test-node" {
		t.Errorf("identity = %s/%d/%s/%s", st.GetAgentId(), st.GetCapacity(), st.GetAdvertiseAddress(), st.GetNodeName())
	}
	if !strings.Contains(strings.Join(st.GetImages(), ","), rig.ImageRef) {
		t.Errorf("images %v lack %s", st.GetImages(), rig.ImageRef)
	}
	if strings.Join(st.GetRuntimes(), ",") != "runc,crun,gvisor" {
		t.Errorf("runtimes = %v", st.GetRuntimes())
	}
	got := h.get(sb.GetSandboxId())
	if got.GetPhase() != fsbv1.Phase_PHASE_RUNNING || got.GetSpec().GetImage() != rig.ImageRef ||
		strings.Join(got.GetEndpoints(), ",") != "127.0.0.1:8080" || got.GetName() != sb.GetName() {
		t.Errorf("sandbox status = %v", got)
	}
	h.delete(sb.GetSandboxId(), 0)
}

func TestFencesRefuseWhatDoesNotFit(t *testing.T) {
	h := newHarness(t, withCapacity(2))
	s := spec("sleep 300")
	s.ExposedPorts = []int32{9000}
	a := h.create(s)
	_, err := h.tryCreate(s)
	holder := "port 9000 of sandbox default/test-"
	by := " is already used by sandbox default/" + a.GetName() + " on agent " + h.agentID + ": delete it or pick another port"
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), holder) || !strings.HasSuffix(err.Error(), by) {
		t.Errorf("second sandbox on port 9000: %v, want ResourceExhausted naming the port, both sandboxes and the fix", err)
	}
	h.create(spec("sleep 300"))
	_, err = h.tryCreate(spec("sleep 300"))
	full := "agent " + h.agentID + " has no free slot for sandbox default/test-"
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), full) ||
		!strings.HasSuffix(err.Error(), "it runs 2 of 2 sandboxes: delete a sandbox or add capacity") {
		t.Errorf("third sandbox with capacity 2: %v, want ResourceExhausted naming the sandbox and the fix", err)
	}
	// Deleting frees the slot and the port.
	h.delete(a.GetSandboxId(), 0)
	h.create(s)
}

func TestBadInputIsRefused(t *testing.T) {
	h := newHarness(t)
	for name, req := range map[string]*fsbv1.AgentServiceCreateSandboxRequest{
		"bad id":       {SandboxId: "Not_OK", Revision: 1, Namespace: "default", Name: "x", Spec: spec("true")},
		"no revision":  {SandboxId: "sb-x", Namespace: "default", Name: "x", Spec: spec("true")},
		"bad name":     {SandboxId: "sb-x", Revision: 1, Namespace: "default", Name: "Bad Name", Spec: spec("true")},
		"no image":     {SandboxId: "sb-x", Revision: 1, Namespace: "default", Name: "x", Spec: &fsbv1.SandboxSpec{}},
		"bad port":     {SandboxId: "sb-x", Revision: 1, Namespace: "default", Name: "x", Spec: &fsbv1.SandboxSpec{Image: rig.ImageRef, ExposedPorts: []int32{70000}}},
		"bad memory":   {SandboxId: "sb-x", Revision: 1, Namespace: "default", Name: "x", Spec: &fsbv1.SandboxSpec{Image: rig.ImageRef, Resources: &fsbv1.Resources{Memory: "lots"}}},
		"bad runtime":  {SandboxId: "sb-x", Revision: 1, Namespace: "default", Name: "x", Spec: &fsbv1.SandboxSpec{Image: rig.ImageRef, Runtime: "kata"}},
		"relative cwd": {SandboxId: "sb-x", Revision: 1, Namespace: "default", Name: "x", Spec: &fsbv1.SandboxSpec{Image: rig.ImageRef, WorkingDir: "tmp"}},
	} {
		_, err := h.client.CreateSandbox(context.Background(), connect.NewRequest(req))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}

func TestTokenIsRequired(t *testing.T) {
	h := newHarness(t)
	for name, opts := range map[string][]connect.ClientOption{
		"no token":    nil,
		"wrong token": {connect.WithInterceptors(auth.Bearer("wrong"))},
	} {
		client := fsbv1connect.NewAgentServiceClient(http.DefaultClient, h.url, opts...)
		_, err := client.GetStatus(context.Background(), connect.NewRequest(&fsbv1.GetStatusRequest{}))
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("%s: GetStatus gave %v, want Unauthenticated", name, err)
		}
		_, err = client.CreateSandbox(context.Background(), connect.NewRequest(&fsbv1.AgentServiceCreateSandboxRequest{SandboxId: "sb-x", Revision: 1, Namespace: "default", Name: "x", Spec: spec("true")}))
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("%s: CreateSandbox gave %v, want Unauthenticated", name, err)
		}
		stream, err := client.StreamLogs(context.Background(), connect.NewRequest(&fsbv1.AgentServiceStreamLogsRequest{SandboxId: "sb-x"}))
		if err == nil {
			for stream.Receive() {
			}
			err = stream.Err()
		}
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("%s: StreamLogs gave %v, want Unauthenticated", name, err)
		}
	}
	// The probes stay open; metrics are not on the API's port.
	for path, want := range map[string]int{"/healthz": http.StatusOK, "/readyz": http.StatusOK, "/metrics": http.StatusNotFound} {
		resp, err := http.Get(h.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %s, want %d", path, resp.Status, want)
		}
	}
}

func TestNoInitRunsCommandAsPID1(t *testing.T) {
	h := newHarness(t)
	s := spec(`echo "pid=$$"`)
	s.NoInit = true
	sb := h.create(s)
	h.waitLog(sb, "pid=1")
}

// creatingSnapshot returns the creates under way, for tests.
func (a *Agent) creatingSnapshot() map[string][]int32 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.creating)
}

// TestMarkPersistedLabelsTheContainer: MarkPersisted puts the persisted
// label on the sandbox's containers (one revision, or every one with
// revision 0), the status reports persisted=true, also after an agent
// restart; a create that says persisted is marked from the start; marking
// again, or marking a sandbox that is gone, succeeds.
func TestMarkPersistedLabelsTheContainer(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	mark := func(id string, rev int64) error {
		_, err := h.client.MarkPersisted(ctx, connect.NewRequest(&fsbv1.MarkPersistedRequest{SandboxId: id, Revision: rev}))
		return err
	}
	labelled := func(sb *fsbv1.AgentSandbox) bool {
		t.Helper()
		c, err := h.cd.LoadContainer(ctx, sb.GetContainerId())
		if err != nil {
			t.Fatal(err)
		}
		labels, err := c.Labels(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return labels[runtime.LabelPersisted] == "true"
	}
	persisted := func(id string, rev int64) bool {
		t.Helper()
		resp, err := h.client.GetStatus(ctx, connect.NewRequest(&fsbv1.GetStatusRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		for _, sb := range resp.Msg.GetStatus().GetSandboxes() {
			if sb.GetSandboxId() == id && sb.GetRevision() == rev {
				return sb.GetPersisted()
			}
		}
		t.Fatalf("no sandbox %s revision %d in the status", id, rev)
		return false
	}
	req := func(id string, rev int64, persisted bool) *fsbv1.AgentServiceCreateSandboxRequest {
		return &fsbv1.AgentServiceCreateSandboxRequest{SandboxId: id, Revision: rev, Namespace: "default", Name: id,
			Spec: spec("exec sleep 300"), Persisted: persisted}
	}

	one := h.createReq(req("sb-one", 1, false))
	if one.GetPersisted() || labelled(one) || persisted("sb-one", 1) {
		t.Fatal("a FAST create is persisted before MarkPersisted")
	}
	for range 2 {
		if err := mark("sb-one", 1); err != nil {
			t.Fatalf("MarkPersisted: %v", err)
		}
	}
	if !labelled(one) || !persisted("sb-one", 1) {
		t.Errorf("after MarkPersisted: label %v, status persisted %v; want both", labelled(one), persisted("sb-one", 1))
	}

	r1, r2 := h.createReq(req("sb-revs", 1, false)), h.createReq(req("sb-revs", 2, false))
	if err := mark("sb-revs", 0); err != nil {
		t.Fatalf("MarkPersisted of every revision: %v", err)
	}
	if !labelled(r1) || !labelled(r2) || !persisted("sb-revs", 1) || !persisted("sb-revs", 2) {
		t.Errorf("revision 0 did not mark every revision")
	}

	stored := h.createReq(req("sb-stored", 1, true))
	if !stored.GetPersisted() || !labelled(stored) {
		t.Errorf("a create that says persisted: reported %v, labelled %v", stored.GetPersisted(), labelled(stored))
	}

	if err := mark("sb-never-made", 1); err != nil {
		t.Errorf("MarkPersisted of a sandbox that is gone: %v", err)
	}
	if err := mark("Not_OK", 1); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("MarkPersisted with a bad ID: %v, want InvalidArgument", err)
	}

	h.restart(nil)
	if !persisted("sb-one", 1) || !persisted("sb-stored", 1) {
		t.Errorf("a restarted agent lost the persisted mark")
	}
}
