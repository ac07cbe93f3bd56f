package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecretsOnTheHostAreRootsOnly: the files scripts/cluster.sh writes
// that hold a token or a private key — DIR/env (FSB_TOKEN), the rendered
// overlay and manifests (every Secret), the Secrets' files — and DIR
// itself are closed to other users of the machine: make cluster-up keeps
// DIR in the repository (.fsb/cluster), which mkdir makes world-readable.
func TestSecretsOnTheHostAreRootsOnly(t *testing.T) {
	e := cluster(t)
	if e.Dir == "" {
		t.Fatal("the cluster's env sets no FSB_CLUSTER_DIR")
	}
	manifests, err := os.ReadFile(filepath.Join(e.Dir, "manifests.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(manifests), "kind: Secret") {
		t.Fatalf("%s holds no Secret: nothing to check", filepath.Join(e.Dir, "manifests.yaml"))
	}
	paths := []string{e.Dir, filepath.Join(e.Dir, "env"), filepath.Join(e.Dir, "manifests.yaml"),
		filepath.Join(e.Dir, "overlay", "rendered.yaml")}
	secrets, err := filepath.Glob(filepath.Join(e.Dir, "secrets", "*"))
	if err != nil || len(secrets) == 0 {
		t.Fatalf("no Secrets' files in %s: %v", filepath.Join(e.Dir, "secrets"), err)
	}
	paths = append(paths, secrets...)
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			t.Error(err)
			continue
		}
		if mode := fi.Mode().Perm(); mode&0o077 != 0 {
			t.Errorf("%s has mode %v: others may read what it holds", p, mode)
		}
	}
}
