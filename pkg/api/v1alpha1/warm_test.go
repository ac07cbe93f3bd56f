package v1alpha1

import (
	"strings"
	"testing"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

func TestWarmKey(t *testing.T) {
	base := &fsbv1.SandboxSpec{Image: "busybox", Resources: &fsbv1.Resources{Cpu: "0.5", Memory: "64Mi"}}
	key, ok := WarmKey(base)
	if !ok {
		t.Fatal("no key for a plain spec")
	}
	same := []*fsbv1.SandboxSpec{
		{Image: "docker.io/library/busybox:latest", Runtime: "runc", Resources: &fsbv1.Resources{Cpu: "500m", Memory: "64Mi"}},
		{Image: "busybox", Command: []string{"sh"}, Args: []string{"-c", "echo hi"}, Envs: []*fsbv1.EnvVar{{Name: "A", Value: "b"}},
			WorkingDir: "/tmp", ExposedPorts: []int32{8080}, Resources: &fsbv1.Resources{Cpu: "500m", Memory: "67108864"}},
	}
	for i, s := range same {
		if k, _ := WarmKey(s); k != key {
			t.Errorf("same[%d]: key %s, want %s", i, k, key)
		}
	}
	other := []*fsbv1.SandboxSpec{
		{Image: "busybox:1.36", Resources: base.Resources},
		{Image: "busybox", Runtime: "crun", Resources: base.Resources},
		{Image: "busybox", Resources: &fsbv1.Resources{Cpu: "1", Memory: "64Mi"}},
		{Image: "busybox", Resources: &fsbv1.Resources{Cpu: "0.5", Memory: "64Mi", Pids: 64}},
		{Image: "busybox"},
	}
	for i, s := range other {
		if k, _ := WarmKey(s); k == key {
			t.Errorf("other[%d] has the key of base", i)
		}
	}
	if _, ok := WarmKey(&fsbv1.SandboxSpec{Image: "busybox", NoInit: true}); ok {
		t.Error("a noInit spec has a key: it cannot be claimed warm")
	}
}

func TestValidateWarm(t *testing.T) {
	for _, c := range []struct {
		name    string
		entries []WarmEntry
		want    string
	}{
		{"fine", []WarmEntry{{Image: "busybox", Count: 3}, {Image: "busybox", Runtime: "crun", Count: 1}}, ""},
		{"no image", []WarmEntry{{Count: 1}}, "spec.warm[0]: spec.image is required"},
		{"bad runtime", []WarmEntry{{Image: "busybox", Runtime: "kata", Count: 1}}, "spec.warm[0].runtime"},
		{"count", []WarmEntry{{Image: "busybox", Count: -1}}, "spec.warm[0].count -1"},
		{"too many", []WarmEntry{{Image: "busybox", Count: MaxWarmCount + 1}}, "spec.warm[0].count"},
		{"resources", []WarmEntry{{Image: "busybox", Count: 1, Resources: &Resources{Memory: "1Ki"}}}, "spec.warm[0]: spec.resources.memory"},
		{"duplicate", []WarmEntry{{Image: "busybox", Count: 1}, {Image: "docker.io/library/busybox:latest", Runtime: "runc", Count: 2}}, "spec.warm[1]: the same image, runtime and resources as spec.warm[0]"},
	} {
		err := ValidateWarm("spec.warm", c.entries)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
}
