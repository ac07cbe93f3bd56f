package ctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// editorScript is a scripted EDITOR: its n-th run saves a copy of the file
// it was given as seen-n, then runs steps[n-1], a shell snippet that
// changes the file "$1". Past the last step it leaves the file as it is.
type editorScript struct {
	dir string
}

func newEditor(t *testing.T, steps ...string) *editorScript {
	t.Helper()
	dir := t.TempDir()
	for i, step := range steps {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("step-%d", i+1)), []byte(step+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	script := `#!/bin/sh
dir='` + dir + `'
n=$(( $(cat "$dir/count" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$dir/count"
cp "$1" "$dir/seen-$n"
[ -f "$dir/step-$n" ] || exit 0
. "$dir/step-$n"
`
	if err := os.WriteFile(filepath.Join(dir, "editor"), []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	return &editorScript{dir: dir}
}

func (e *editorScript) command() string { return filepath.Join(e.dir, "editor") }

// runs returns how many times the editor ran.
func (e *editorScript) runs(t *testing.T) int {
	b, err := os.ReadFile(filepath.Join(e.dir, "count"))
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// seen returns the file as the editor's n-th run opened it.
func (e *editorScript) seen(t *testing.T, n int) string {
	b, err := os.ReadFile(filepath.Join(e.dir, fmt.Sprintf("seen-%d", n)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const setImage = `sed -i 's|^image: ""|image: localhost/fsb/busybox:latest|' "$1"`

func TestRunEditor(t *testing.T) {
	f := newFake()
	c, out, errw := client(t, serve(t, f), testToken, "team")
	ed := newEditor(t,
		// A field the spec does not have.
		setImage+`; printf 'bogus: 1\n' >> "$1"`,
		// Fixed, but a port out of range.
		`sed -i -e '/^bogus:/d' -e 's/^- 8080$/- 70000/' "$1"`,
		// Fixed, and a command written.
		`sed -i 's/^- 70000$/- 9090/' "$1"; printf 'command: [sh, -c, "echo hi"]\n' >> "$1"`,
	)
	c.editor = ed.command()
	err := c.Run(context.Background(), RunOptions{
		Name: "demo", Ports: []string{"8080"}, Mode: "strong", Pool: "p1", Labels: []string{"app=demo"},
	})
	if err != nil {
		t.Fatalf("%v\nstderr:\n%s", err, errw)
	}
	if n := ed.runs(t); n != 3 {
		t.Errorf("editor ran %d times, want 3 (two mistakes, then right)", n)
	}

	first := ed.seen(t, 1)
	for _, want := range []string{"# Sandbox demo in namespace team.", "\nimage: \"\"\n", "\n# command: [sh, -c,", "\nexposedPorts:\n- 8080\n",
		"\nconsistencyMode: strong\n", "\nlabels:\n  app: demo\n", "\n# resources:\n#   cpu: 500m\n",
		"\n# failurePolicy: AutoRecreate\n", "\n# recoveryTimeoutSeconds: 600\n", "\n# expireTime: 2030-01-02T15:04:05Z\n"} {
		if !strings.Contains(first, want) {
			t.Errorf("template lacks %q:\n%s", want, first)
		}
	}
	second, third := ed.seen(t, 2), ed.seen(t, 3)
	if !strings.HasPrefix(second, "# error: unknown field \"bogus\"\n# Fix it and save again") || !strings.Contains(second, "\nbogus: 1\n") {
		t.Errorf("second opening does not show the error over the user's text:\n%s", second)
	}
	if !strings.HasPrefix(third, "# error: exposedPorts: 70000 is not a port (1-65535)\n") || strings.Contains(third, "bogus") {
		t.Errorf("third opening does not show the new error alone:\n%s", third)
	}
	if !strings.Contains(errw.String(), `error: unknown field "bogus"`) || !strings.Contains(errw.String(), "error: exposedPorts: 70000") {
		t.Errorf("stderr does not report the mistakes:\n%s", errw)
	}

	want := &fsbv1.CreateSandboxRequest{
		Name: "demo", Namespace: "team",
		Labels: map[string]string{"app": "demo"},
		Spec: &fsbv1.SandboxSpec{
			Image:           "localhost/fsb/busybox:latest",
			Command:         []string{"sh", "-c", "echo hi"},
			ExposedPorts:    []int32{9090},
			PoolRef:         "p1",
			ConsistencyMode: fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG,
		},
	}
	if got := f.lastCreate(t); !proto.Equal(got, want) {
		t.Errorf("request:\n%s\nwant:\n%s", prototext.Format(got), prototext.Format(want))
	}
	if !regexp.MustCompile(`^sandbox demo created in `).MatchString(out.String()) {
		t.Errorf("output:\n%s", out)
	}
}

func TestRunEditorCancelled(t *testing.T) {
	tests := []struct {
		name  string
		steps []string
		want  string
		runs  int
	}{
		{"emptied", []string{`: > "$1"`}, "cancelled: the file was empty", 1},
		{"only comments", []string{`printf '# image: x\n\n   # more\n' > "$1"`}, "cancelled: the file was empty", 1},
		{"closed without saving", nil, "cancelled: the file was not changed", 1},
		{"emptied after a mistake", []string{`printf 'image: [\n' > "$1"`, `: > "$1"`}, "cancelled: the file was empty", 2},
		{"mistake left as it was", []string{`printf 'image: x\nports: [1]\n' > "$1"`}, "cancelled: the file was not changed", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			c, _, _ := client(t, serve(t, f), testToken, "")
			ed := newEditor(t, tt.steps...)
			c.editor = ed.command()
			err := c.Run(context.Background(), RunOptions{Name: "demo"})
			if err == nil || IsUsage(err) || err.Error() != tt.want {
				t.Errorf("err = %v (usage %v), want %q, exit status 1", err, IsUsage(err), tt.want)
			}
			if n := ed.runs(t); n != tt.runs {
				t.Errorf("editor ran %d times, want %d", n, tt.runs)
			}
			if len(f.creates) != 0 {
				t.Errorf("a cancelled edit sent %d creates", len(f.creates))
			}
		})
	}
}

func TestRunEditorFailedCreateKeepsFile(t *testing.T) {
	f := newFake()
	f.createErr = connect.NewError(connect.CodeNotFound, errors.New(`image "localhost/fsb/busybox:latest" not found`))
	c, _, _ := client(t, serve(t, f), testToken, "")
	c.editor = newEditor(t, setImage).command()
	err := c.Run(context.Background(), RunOptions{Name: "demo"})
	m := regexp.MustCompile(`\(what you wrote is kept in (\S+)\)$`).FindStringSubmatch(fmt.Sprint(err))
	if m == nil {
		t.Fatalf("err = %v, want it to name the kept file", err)
	}
	t.Cleanup(func() { os.Remove(m[1]) })
	if b, err := os.ReadFile(m[1]); err != nil || !strings.Contains(string(b), "image: localhost/fsb/busybox:latest") {
		t.Errorf("kept file %s: %v\n%s", m[1], err, b)
	}
}

func TestRunEditorFailing(t *testing.T) {
	c, _, _ := client(t, serve(t, newFake()), testToken, "")
	c.editor = "false"
	err := c.Run(context.Background(), RunOptions{Name: "demo"})
	if err == nil || !strings.Contains(err.Error(), `the editor "false" failed`) {
		t.Errorf("err = %v, want the editor's failure", err)
	}
}

func TestParseEditedErrors(t *testing.T) {
	tests := []struct{ text, want string }{
		{"image: [", "line 1: did not find expected node content"},
		{"image: x\nimage: y\n", `key "image" already set in map`},
		{"image: x\nspec:\n  image: y\n", `unknown field "spec"`},
		{"command: [sh]\n", "image is required"},
		{"image: x\nexposedPorts: [0]\n", "exposedPorts: 0 is not a port (1-65535)"},
		{"image: x\nexposedPorts: [http]\n", "exposedPorts"},
		{"image: x\nexposedPorts: [80, 80]\n", "exposedPorts: 80 is listed twice"},
		{"image: x\nenvs:\n- value: v\n", `envs: "" is not a variable name`},
		{"image: x\nconsistencyMode: eventual\n", `consistencyMode "eventual": want fast or strong`},
		{"image: x\nruntime: kata\n", `runtime "kata": want runc, crun or gvisor`},
		{"image: x\nworkingDir: srv\n", `workingDir "srv": want an absolute path`},
		{"image: x\nresources:\n  cpu: lots\n", `resources.cpu "lots"`},
		{"image: x\nlabels:\n  bad key: v\n", `labels: key "bad key"`},
		{"image: x\nfailurePolicy: retry\n", `failurePolicy "retry": want Manual or AutoRecreate`},
		{"image: x\nrecoveryTimeoutSeconds: -1\n", "recoveryTimeoutSeconds: -1 is not a number of seconds from 1 to 2147483647"},
		{"image: x\nrecoveryTimeoutSeconds: 3000000000\n", "recoveryTimeoutSeconds: 3000000000 is not"},
		{"image: x\nrecoveryTimeoutSeconds: 1m\n", "recoveryTimeoutSeconds"},
		{"image: x\nexpireTime: tomorrow\n", `expireTime "tomorrow": want an RFC 3339 time such as 2030-01-02T15:04:05Z, or nothing for never`},
		{"image: x\nexpireTime: 2026-01-01 10:00\n", `expireTime "2026-01-01 10:00": want an RFC 3339 time`},
		{"image: x\nexpireTime: 2020-01-01T00:00:00Z\n", "expireTime 2020-01-01T00:00:00Z has passed"},
	}
	req := &fsbv1.CreateSandboxRequest{Name: "demo", Namespace: "default", Spec: &fsbv1.SandboxSpec{}}
	for _, tt := range tests {
		_, err := parseEdited([]byte(tt.text), req, time.Now())
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: err = %v, want %q", tt.text, err, tt.want)
		}
	}
}

// TestEditTemplateRoundTrip checks that a template filled from every flag
// gives back the same request once an image is written in.
func TestEditTemplateRoundTrip(t *testing.T) {
	req := &fsbv1.CreateSandboxRequest{
		Name: "web", Namespace: "team",
		Labels: map[string]string{"app": "web", "tier": "front"},
		Spec: &fsbv1.SandboxSpec{
			Command:                []string{"sh", "-c", "echo 'a: b'; sleep 1"},
			Args:                   []string{"--port", "8080"},
			Envs:                   []*fsbv1.EnvVar{{Name: "A", Value: "1"}, {Name: "EMPTY"}},
			WorkingDir:             "/srv",
			ExposedPorts:           []int32{8080, 9090},
			PoolRef:                "p1",
			ConsistencyMode:        fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST,
			FailurePolicy:          fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE,
			RecoveryTimeoutSeconds: 600,
			ExpireTime:             timestamppb.New(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)),
			Resources:              &fsbv1.Resources{Cpu: "500m", Memory: "64Mi", Pids: 32},
			Runtime:                "crun",
			NoInit:                 true,
		},
	}
	text := strings.Replace(string(editTemplate(req)), `image: ""`, "image: img:1", 1)
	for _, want := range []string{"\nfailurePolicy: AutoRecreate\n", "\nrecoveryTimeoutSeconds: 600\n", "\nexpireTime: \"2030-01-02T03:04:05Z\"\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("template lacks %q:\n%s", want, text)
		}
	}
	got, err := parseEdited([]byte(text), req, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	want := proto.Clone(req).(*fsbv1.CreateSandboxRequest)
	want.Spec.Image = "img:1"
	if !proto.Equal(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s\nfrom:\n%s", prototext.Format(got), prototext.Format(want), text)
	}
}

// TestParseEditedLifecycle checks the lifecycle fields as a person writes
// them: an unquoted time, the flag's spelling of a policy.
func TestParseEditedLifecycle(t *testing.T) {
	req := &fsbv1.CreateSandboxRequest{Name: "demo", Namespace: "default", Spec: &fsbv1.SandboxSpec{
		FailurePolicy: fsbv1.FailurePolicy_FAILURE_POLICY_MANUAL, RecoveryTimeoutSeconds: 5,
		ExpireTime: timestamppb.New(time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)),
	}}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	got, err := parseEdited([]byte("image: x\nfailurePolicy: auto-recreate\nrecoveryTimeoutSeconds: 90\nexpireTime: 2030-06-01T12:00:00+02:00\n"), req, now)
	if err != nil {
		t.Fatal(err)
	}
	spec := got.GetSpec()
	if spec.GetFailurePolicy() != fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE || spec.GetRecoveryTimeoutSeconds() != 90 ||
		!spec.GetExpireTime().AsTime().Equal(time.Date(2030, 6, 1, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("spec %v, want AutoRecreate, 90 s and 2030-06-01T10:00:00Z", spec)
	}
	// Left out, each is unset again: what the file says wins over the flags.
	got, err = parseEdited([]byte("image: x\n"), req, now)
	if err != nil {
		t.Fatal(err)
	}
	if spec := got.GetSpec(); spec.GetFailurePolicy() != fsbv1.FailurePolicy_FAILURE_POLICY_UNSPECIFIED ||
		spec.GetRecoveryTimeoutSeconds() != 0 || spec.GetExpireTime() != nil {
		t.Errorf("spec %v, want the lifecycle fields unset", spec)
	}
}

// TestRunWithoutImageNeedsATerminalForVi: with no EDITOR, vi would wait
// for keys that never come when stdin is not a terminal (a script, CI);
// the create says what to do instead.
func TestRunWithoutImageNeedsATerminalForVi(t *testing.T) {
	c, _, _ := client(t, serve(t, newFake()), testToken, "")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	c.editor, c.stdin = "", r
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = c.Run(ctx, RunOptions{Name: "demo"})
	if err == nil || !strings.Contains(err.Error(), "needs a terminal: give --image, or set EDITOR") {
		t.Errorf("err = %v, want the advice to give --image", err)
	}
}
