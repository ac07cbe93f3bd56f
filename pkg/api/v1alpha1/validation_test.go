package v1alpha1

import (
	"strings"
	"testing"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// TestValidateSpecBounds: each limit takes the value at it and refuses the
// one past it, naming the field.
func TestValidateSpecBounds(t *testing.T) {
	ports := func(n int) []int32 {
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(1000 + i)
		}
		return out
	}
	envs := func(n int) []*fsbv1.EnvVar {
		out := make([]*fsbv1.EnvVar, n)
		for i := range out {
			out[i] = &fsbv1.EnvVar{Name: "A", Value: "1"}
		}
		return out
	}
	for _, tc := range []struct {
		name string
		set  func(*fsbv1.SandboxSpec)
		want string // "" means accepted; else a word of the message
	}{
		{"memory at the minimum", func(s *fsbv1.SandboxSpec) { s.Resources = &fsbv1.Resources{Memory: "8Mi"} }, ""},
		{"memory below the minimum", func(s *fsbv1.SandboxSpec) { s.Resources = &fsbv1.Resources{Memory: "6291455"} }, "spec.resources.memory"},
		{"memory at the maximum", func(s *fsbv1.SandboxSpec) { s.Resources = &fsbv1.Resources{Memory: "1Ti"} }, ""},
		{"memory past the maximum", func(s *fsbv1.SandboxSpec) { s.Resources = &fsbv1.Resources{Memory: "1099511627777"} }, "at most 1Ti"},
		{"memory not a quantity", func(s *fsbv1.SandboxSpec) { s.Resources = &fsbv1.Resources{Memory: "lots"} }, "positive quantity"},
		{"cpu at the cap", func(s *fsbv1.SandboxSpec) { s.Resources = &fsbv1.Resources{Cpu: "4"} }, ""},
		{"cpu past the cap", func(s *fsbv1.SandboxSpec) { s.Resources = &fsbv1.Resources{Cpu: "256001m"} }, "at most 256 cores"},
		{"pids under the least", func(s *fsbv1.SandboxSpec) { s.Resources = &fsbv1.Resources{Pids: 8} }, "or 16 to 4194304"},
		{"pids past PID_MAX_LIMIT", func(s *fsbv1.SandboxSpec) { s.Resources = &fsbv1.Resources{Pids: 1<<22 + 1} }, "to 4194304"},
		{"gvisor under its memory minimum", func(s *fsbv1.SandboxSpec) {
			s.Runtime = RuntimeGVisor
			s.Resources = &fsbv1.Resources{Memory: "16Mi"}
		}, "at least 32Mi with runtime gvisor"},
		{"cpu zero", func(s *fsbv1.SandboxSpec) { s.Resources = &fsbv1.Resources{Cpu: "0"} }, "positive quantity"},
		{"pids at int32", func(s *fsbv1.SandboxSpec) { s.Resources = &fsbv1.Resources{Pids: MaxPids} }, ""},
		{"pids past int32", func(s *fsbv1.SandboxSpec) { s.Resources = &fsbv1.Resources{Pids: MaxPids + 1} }, "spec.resources.pids"},
		{"negative pids", func(s *fsbv1.SandboxSpec) { s.Resources = &fsbv1.Resources{Pids: -1} }, "spec.resources.pids"},
		{"64 ports", func(s *fsbv1.SandboxSpec) { s.ExposedPorts = ports(MaxPorts) }, ""},
		{"65 ports", func(s *fsbv1.SandboxSpec) { s.ExposedPorts = ports(MaxPorts + 1) }, "65 ports, at most 64"},
		{"port 0", func(s *fsbv1.SandboxSpec) { s.ExposedPorts = []int32{0} }, "0 is not a port"},
		{"1024 envs", func(s *fsbv1.SandboxSpec) { s.Envs = envs(MaxEnvs) }, ""},
		{"1025 envs", func(s *fsbv1.SandboxSpec) { s.Envs = envs(MaxEnvs + 1) }, "1025 entries, at most 1024"},
		{"env characters past the limit", func(s *fsbv1.SandboxSpec) {
			s.Envs = []*fsbv1.EnvVar{{Name: "A", Value: strings.Repeat("x", MaxEnvChars)}}
		}, "at most 131072"},
		{"env name starting with a digit", func(s *fsbv1.SandboxSpec) { s.Envs = []*fsbv1.EnvVar{{Name: "1A"}} }, `"1A" is not a variable name`},
		{"env name with '='", func(s *fsbv1.SandboxSpec) { s.Envs = []*fsbv1.EnvVar{{Name: "A=B"}} }, "is not a variable name"},
		{"command at the character limit", func(s *fsbv1.SandboxSpec) { s.Command = []string{strings.Repeat("a", MaxCommandChars)} }, ""},
		{"command past the character limit", func(s *fsbv1.SandboxSpec) { s.Command = []string{strings.Repeat("a", MaxCommandChars+1)} }, "at most 131072"},
		{"NUL in the command", func(s *fsbv1.SandboxSpec) { s.Command = []string{"a\x00"} }, "spec.command[0]"},
		{"NUL in the working dir", func(s *fsbv1.SandboxSpec) { s.WorkingDir = "/a\x00" }, "spec.workingDir"},
		{"relative working dir", func(s *fsbv1.SandboxSpec) { s.WorkingDir = "srv" }, "want an absolute path"},
		{"NUL in the image", func(s *fsbv1.SandboxSpec) { s.Image = "busybox\x00" }, "spec.image"},
		{"unknown runtime", func(s *fsbv1.SandboxSpec) { s.Runtime = "kata" }, `spec.runtime "kata"`},
		{"bad pool", func(s *fsbv1.SandboxSpec) { s.PoolRef = "Pool/1" }, "spec.poolRef"},
		{"consistency mode out of range", func(s *fsbv1.SandboxSpec) { s.ConsistencyMode = -1 }, "spec.consistencyMode -1"},
		{"failure policy out of range", func(s *fsbv1.SandboxSpec) { s.FailurePolicy = 3 }, "spec.failurePolicy 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := &fsbv1.SandboxSpec{Image: "localhost/fsb/busybox:latest"}
			tc.set(spec)
			err := ValidateSpec(spec)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("ValidateSpec: %v, want it accepted", err)
			case tc.want != "" && err == nil:
				t.Errorf("ValidateSpec accepted it, want an error saying %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Errorf("ValidateSpec: %.300v, want it to say %q", err, tc.want)
			}
		})
	}
}

// TestValidateLabels: labels are held to Kubernetes' rules and counted.
func TestValidateLabels(t *testing.T) {
	many := map[string]string{}
	for i := range MaxLabels + 1 {
		many["k"+string(rune('a'+i%26))+strings.Repeat("x", i/26)] = "v"
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   string
	}{
		{"fine", map[string]string{"app": "web", "example.com/tier": "front"}, ""},
		{"too many", many, "65 entries, at most 64"},
		{"bad key", map[string]string{"bad key": "v"}, `labels: key "bad key"`},
		{"long value", map[string]string{"k": strings.Repeat("v", 64)}, "must be no more than 63"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateLabels(tc.labels)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("ValidateLabels: %v, want it accepted", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("ValidateLabels: %v, want it to say %q", err, tc.want)
			}
		})
	}
}
