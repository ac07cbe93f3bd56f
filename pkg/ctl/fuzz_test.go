package ctl

import (
	"testing"
	"time"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// FuzzEditYAML feeds what a user may write in the $EDITOR of fsb ctl run
// to the editor's parser. Nothing may panic, and what the editor accepts
// the fast path must accept too: a mistake is fixed in the editor, not
// after a failed call.
func FuzzEditYAML(f *testing.F) {
	for _, seed := range []string{
		"image: localhost/fsb/busybox:latest\ncommand: [sh, -c, 'echo hi']\n",
		"image: busybox\nargs: [httpd, -f]\nenvs:\n- name: A\n  value: '1'\nworkingDir: /srv\nexposedPorts: [8080, 9090]\n" +
			"resources:\n  cpu: 500m\n  memory: 64Mi\n  pids: 64\nruntime: crun\nconsistencyMode: strong\nfailurePolicy: AutoRecreate\n" +
			"recoveryTimeoutSeconds: 60\nexpireTime: 2100-01-02T15:04:05Z\nlabels:\n  app: web\n",
		"image: x\nexposedPorts: [0, 70000]\n",
		"image: x\nenvs:\n- name: A B\n  value: \"a\\0b\"\n",
		"image: x\nresources:\n  cpu: 1e12\n  memory: 1000Ei\n  pids: 9223372036854775807\n",
		"image: x\nworkingDir: srv\n",
		"image: [\n", "image: x\nimage: y\n", "# only a comment\n", "",
	} {
		f.Add([]byte(seed))
	}
	req := &fsbv1.CreateSandboxRequest{Name: "demo", Namespace: "default", Spec: &fsbv1.SandboxSpec{}}
	now := time.Now()
	f.Fuzz(func(t *testing.T, text []byte) {
		out, err := parseEdited(text, req, now)
		if err != nil {
			return
		}
		if err := v1alpha1.ValidateCreate(out.GetNamespace(), out, now); err != nil {
			t.Fatalf("the editor accepted what the fast path refuses: %v", err)
		}
	})
}
