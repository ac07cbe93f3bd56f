package v1alpha1_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
)

// object is a Sandbox or SandboxPool as JSON a user would write, changed
// by each case before both sides see it.
type object = map[string]any

func exampleSandbox(name string) object {
	return object{
		"apiVersion": "sandbox.fast.io/v1alpha1", "kind": "Sandbox",
		"metadata": object{"name": name},
		"spec": object{
			"image": "alpine:latest", "exposedPorts": []any{8080}, "poolRef": "default-pool",
			"consistencyMode": "fast", "failurePolicy": "AutoRecreate",
		},
	}
}

func examplePool(name string) object {
	return object{
		"apiVersion": "sandbox.fast.io/v1alpha1", "kind": "SandboxPool",
		"metadata": object{"name": name},
		"spec": object{
			"capacity":           object{"poolMin": 1, "poolMax": 3, "bufferMin": 0, "bufferMax": 1},
			"maxSandboxesPerPod": 5, "runtimeType": "container",
		},
	}
}

func spec(o object) object { return o["spec"].(object) }

func setSpec(k string, v any) func(object) { return func(o object) { spec(o)[k] = v } }

func setResources(r object) func(object) { return setSpec("resources", r) }

// schemaCase is one Sandbox or SandboxPool both sides judge. A refused one
// names the field both messages must hold and, for a CEL rule, the rule's
// message both must say word for word.
type schemaCase struct {
	name  string
	pool  bool
	set   func(object)
	field string // "" means both accept
	rule  string
}

func repeat(s string, n int) string { return strings.Repeat(s, n) }

func ints(from, n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = from + i
	}
	return out
}

func strs(s string, n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func envs(n int, value string) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = object{"name": "A", "value": value}
	}
	return out
}

// schemaCases is the table of TestSchemaAgreesWithGo.
func schemaCases() []schemaCase {
	const (
		cpuRule    = "want a positive quantity such as 500m or 2, at most 256 cores"
		memoryRule = "want a positive quantity such as 256Mi, at least 8Mi and at most 1Ti"
		imageRule  = "want an image reference such as alpine:latest: a repository path of at most 255 characters (library/ added to a name without one), a sha256, sha384 or sha512 digest, not a bare 64-character hex ID"
		pidsRule   = "want 0 (the agent's default) or 16 to 4194304 (its threads count, fsb init's too)"
	)
	return []schemaCase{
		// Accepted by both.
		{name: "the brief's example", set: func(object) {}},
		{name: "every field set", set: func(o object) {
			s := spec(o)
			s["consistencyMode"], s["failurePolicy"], s["runtime"] = "strong", "Manual", "crun"
			s["command"], s["args"] = []any{"sh", "-c"}, []any{"echo hi"}
			s["envs"] = []any{object{"name": "_HOME1", "value": "/root"}, object{"name": "EMPTY"}}
			s["workingDir"] = "/srv"
			s["resources"] = object{"cpu": "500m", "memory": "256Mi", "pids": 64}
			s["recoveryTimeoutSeconds"] = 60
			s["expireTime"] = "2099-01-01T00:00:00Z"
			s["noInit"] = true
			o["metadata"].(object)["labels"] = object{"app": "web", "example.com/tier": "front"}
		}},
		{name: "cpu and memory as integers", set: setResources(object{"cpu": 2, "memory": 1 << 30})},
		{name: "cpu at 256 cores and memory at 8Mi", set: setResources(object{"cpu": "256", "memory": "8Mi"})},
		{name: "memory at 1Ti", set: setResources(object{"memory": "1Ti"})},
		{name: "pids at 16", set: setResources(object{"pids": 16})},
		{name: "pids at 4194304", set: setResources(object{"pids": 4194304})},
		{name: "gvisor at 32Mi", set: func(o object) { spec(o)["runtime"] = "gvisor"; spec(o)["resources"] = object{"memory": "32Mi"} }},
		{name: "port 1 and 65535", set: setSpec("exposedPorts", []any{1, 65535})},
		{name: "64 ports", set: setSpec("exposedPorts", ints(1000, 64))},
		{name: "name of 253 characters", set: func(o object) { o["metadata"].(object)["name"] = repeat("a", 253) }},
		{name: "command and args of 1024 entries", set: func(o object) { spec(o)["command"] = strs("a", 1000); spec(o)["args"] = strs("b", 24) }},
		{name: "command of 131072 characters", set: setSpec("command", []any{repeat("a", 131072)})},
		{name: "1024 envs", set: setSpec("envs", envs(1024, "1"))},
		{name: "working dir of 4096 bytes", set: setSpec("workingDir", "/"+repeat("d", 4095))},
		{name: "image with registry, tag and digest", set: setSpec("image", "registry.example:5000/team/app:v1@sha256:"+repeat("ab", 32))},
		{name: "enums written empty, as their defaults", set: func(o object) {
			s := spec(o)
			s["consistencyMode"], s["failurePolicy"], s["runtime"] = "", "", ""
		}},
		{name: "image path of 255 characters, library/ added", set: setSpec("image", repeat("a", 247)+":v1")},
		{name: "image path of 255 characters on Docker Hub", set: setSpec("image", "docker.io/"+repeat("a", 247))},
		{name: "image path of 255 characters on a registry", set: setSpec("image", "registry.example:5000/"+repeat("a", 255)+"@sha512:"+repeat("f", 128))},
		{name: "image path of 255 characters in a namespace", set: setSpec("image", "team/"+repeat("a", 250))},
		{name: "pool", pool: true, set: func(object) {}},
		{name: "pool with runtimeType written empty", pool: true, set: setSpec("runtimeType", "")},
		{name: "pool without maxSandboxesPerPod", pool: true, set: func(o object) { delete(spec(o), "maxSandboxesPerPod") }},
		{name: "pool without capacity (agents started by other means)", pool: true, set: func(o object) { delete(spec(o), "capacity") }},
		{name: "pool named default with only warm entries", pool: true, set: func(o object) {
			o["metadata"].(object)["name"] = "default"
			o["spec"] = object{"warm": []any{object{"image": "localhost/fsb/busybox:latest", "runtime": "runc", "count": 2}}}
		}},
		{name: "pool of the sample's shape", pool: true, set: func(o object) {
			spec(o)["capacity"] = object{"poolMin": 1, "poolMax": 3, "bufferMin": 1, "bufferMax": 1}
			spec(o)["maxSandboxesPerPod"] = 2
		}},
		{name: "pool of gvisor with equal bounds", pool: true, set: func(o object) {
			spec(o)["capacity"] = object{"poolMin": 2, "poolMax": 2, "bufferMin": 1, "bufferMax": 1}
			spec(o)["runtimeType"] = "gvisor"
		}},

		// Refused by both.
		{name: "no image", set: func(o object) { delete(spec(o), "image") }, field: "spec.image"},
		{name: "empty image", set: setSpec("image", ""), field: "spec.image"},
		{name: "image in capitals", set: setSpec("image", "Alpine:latest"), field: "spec.image"},
		{name: "image with a space", set: setSpec("image", "alpine latest"), field: "spec.image"},
		{name: "image path past 255 characters, library/ added", set: setSpec("image", repeat("a", 248)+":v1"), field: "spec.image", rule: imageRule},
		{name: "image path past 255 characters on Docker Hub", set: setSpec("image", "index.docker.io/"+repeat("a", 248)), field: "spec.image", rule: imageRule},
		{name: "image path past 255 characters on a registry", set: setSpec("image", "localhost/"+repeat("a", 256)), field: "spec.image", rule: imageRule},
		{name: "image path past 255 characters in a namespace", set: setSpec("image", "team/"+repeat("a", 251)), field: "spec.image", rule: imageRule},
		{name: "image a bare hex ID", set: setSpec("image", repeat("ab", 32)), field: "spec.image", rule: imageRule},
		{name: "image with an md5 digest", set: setSpec("image", "alpine@md5:"+repeat("ab", 16)), field: "spec.image", rule: imageRule},
		{name: "image digest in capitals", set: setSpec("image", "alpine@sha256:"+repeat("AB", 32)), field: "spec.image", rule: imageRule},
		{name: "image past 1024 bytes", set: setSpec("image", repeat("a", 1025)), field: "spec.image"},
		{name: "port 0", set: setSpec("exposedPorts", []any{0}), field: "spec.exposedPorts"},
		{name: "port 65536", set: setSpec("exposedPorts", []any{65536}), field: "spec.exposedPorts"},
		{name: "duplicate port", set: setSpec("exposedPorts", []any{8080, 8080}), field: "spec.exposedPorts"},
		{name: "65 ports", set: setSpec("exposedPorts", ints(1000, 65)), field: "spec.exposedPorts"},
		{name: "unknown consistencyMode", set: setSpec("consistencyMode", "eventual"), field: "spec.consistencyMode"},
		{name: "consistencyMode in the wire's spelling", set: setSpec("consistencyMode", "FAST"), field: "spec.consistencyMode"},
		{name: "unknown failurePolicy", set: setSpec("failurePolicy", "Retry"), field: "spec.failurePolicy"},
		{name: "failurePolicy in lower case", set: setSpec("failurePolicy", "autorecreate"), field: "spec.failurePolicy"},
		{name: "unknown runtime", set: setSpec("runtime", "kata"), field: "spec.runtime"},
		{name: "name of 254 characters", set: func(o object) { o["metadata"].(object)["name"] = repeat("a", 254) }, field: "name"},
		{name: "name in capitals", set: func(o object) { o["metadata"].(object)["name"] = "My-Sandbox" }, field: "name"},
		{name: "bad label key", set: func(o object) { o["metadata"].(object)["labels"] = object{"bad key": "v"} }, field: "labels"},
		{name: "env without a name", set: setSpec("envs", []any{object{"value": "x"}}), field: "spec.envs"},
		{name: "env name starting with a digit", set: setSpec("envs", []any{object{"name": "1A"}}), field: "spec.envs"},
		{name: "env name with a space", set: setSpec("envs", []any{object{"name": "A B"}}), field: "spec.envs"},
		{name: "env value with NUL", set: setSpec("envs", []any{object{"name": "A", "value": "x\x00y"}}), field: "spec.envs"},
		{name: "1025 envs", set: setSpec("envs", envs(1025, "1")), field: "spec.envs"},
		{name: "envs past 131072 characters", set: setSpec("envs", []any{object{"name": "A", "value": repeat("x", 131072)}}),
			field: "spec", rule: "spec.envs: at most 131072 characters of names and values together (128 KiB)"},
		{name: "argument with NUL", set: setSpec("args", []any{"a\x00b"}), field: "spec.args"},
		{name: "command and args of 1025 entries", set: func(o object) { spec(o)["command"] = strs("a", 1000); spec(o)["args"] = strs("b", 25) },
			field: "spec", rule: "spec.command and spec.args: at most 1024 entries together"},
		{name: "command and args past 131072 characters", set: func(o object) {
			spec(o)["command"] = []any{repeat("a", 100<<10)}
			spec(o)["args"] = []any{repeat("é", 40<<10)}
		}, field: "spec", rule: "spec.command and spec.args: at most 131072 characters together (128 KiB)"},
		{name: "relative working dir", set: setSpec("workingDir", "srv"), field: "spec.workingDir"},
		{name: "working dir past 4096 bytes", set: setSpec("workingDir", "/"+repeat("é", 2048)),
			field: "spec.workingDir", rule: "at most 4096 bytes"},
		{name: "bad poolRef", set: setSpec("poolRef", "Pool/1"), field: "spec.poolRef"},
		{name: "negative recoveryTimeoutSeconds", set: setSpec("recoveryTimeoutSeconds", -1), field: "spec.recoveryTimeoutSeconds"},
		{name: "negative pids", set: setResources(object{"pids": -1}), field: "spec.resources.pids", rule: pidsRule},
		{name: "pids under 16", set: setResources(object{"pids": 8}), field: "spec.resources.pids", rule: pidsRule},
		{name: "pids past 4194304", set: setResources(object{"pids": 4194305}), field: "spec.resources.pids", rule: pidsRule},
		{name: "cpu zero", set: setResources(object{"cpu": "0"}), field: "spec.resources.cpu", rule: cpuRule},
		{name: "cpu zero as an integer", set: setResources(object{"cpu": 0}), field: "spec.resources.cpu", rule: cpuRule},
		{name: "cpu past 256 cores", set: setResources(object{"cpu": "256001m"}), field: "spec.resources.cpu", rule: cpuRule},
		{name: "cpu not a quantity", set: setResources(object{"cpu": "lots"}), field: "spec.resources.cpu", rule: cpuRule},
		{name: "cpu as a fraction", set: setResources(object{"cpu": 0.5}), field: "cpu"},
		{name: "memory under 8Mi", set: setResources(object{"memory": "1Ki"}), field: "spec.resources.memory", rule: memoryRule},
		{name: "memory past 1Ti", set: setResources(object{"memory": "1099511627777"}), field: "spec.resources.memory", rule: memoryRule},
		{name: "memory under 8Mi as an integer", set: setResources(object{"memory": 1 << 20}), field: "spec.resources.memory", rule: memoryRule},
		{name: "gvisor under 32Mi", set: func(o object) { spec(o)["runtime"] = "gvisor"; spec(o)["resources"] = object{"memory": "16Mi"} },
			field: "spec.resources.memory", rule: "at least 32Mi with runtime gvisor, whose kernel runs inside the limit"},
		{name: "pool min past max", pool: true, set: func(o object) { spec(o)["capacity"].(object)["poolMin"] = 4 },
			field: "spec.capacity.poolMin", rule: "poolMin must be at most poolMax"},
		{name: "pool buffer min past max", pool: true, set: func(o object) { spec(o)["capacity"].(object)["bufferMin"] = 2 },
			field: "spec.capacity.bufferMin", rule: "bufferMin must be at most bufferMax"},
		{name: "pool max 0", pool: true, set: func(o object) {
			spec(o)["capacity"] = object{"poolMin": 0, "poolMax": 0, "bufferMin": 0, "bufferMax": 0}
		},
			field: "spec.capacity.poolMax"},
		{name: "pool negative buffer", pool: true, set: func(o object) { spec(o)["capacity"].(object)["bufferMin"] = -1 }, field: "spec.capacity.bufferMin"},
		{name: "pool negative maxSandboxesPerPod", pool: true, set: setSpec("maxSandboxesPerPod", -1), field: "spec.maxSandboxesPerPod"},
		{name: "pool maxSandboxesPerPod 0", pool: true, set: setSpec("maxSandboxesPerPod", 0), field: "spec.maxSandboxesPerPod"},
		{name: "pool buffer min past pool max", pool: true, set: func(o object) {
			spec(o)["capacity"] = object{"poolMin": 1, "poolMax": 2, "bufferMin": 3, "bufferMax": 3}
		}, field: "spec.capacity.bufferMin", rule: "bufferMin must be at most poolMax: a pool cannot keep more idle agents than it may have pods"},
		{name: "pool unknown runtimeType", pool: true, set: setSpec("runtimeType", "kata"), field: "spec.runtimeType"},
		{name: "pool name not a label", pool: true, set: func(o object) { o["metadata"].(object)["name"] = "gpu.pool" },
			field: "DNS-1123 label", rule: "a SandboxPool's name must be a DNS-1123 label: at most 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit (it becomes a label value and its agents' --pool)"},
	}
}

// goValidate decodes a case's JSON as the controller's client would and
// judges it with v1alpha1's validation.
func goValidate(namespace string, pool bool, data []byte) error {
	if pool {
		var p v1alpha1.SandboxPool
		if err := json.Unmarshal(data, &p); err != nil {
			return err
		}
		p.Namespace = namespace
		return v1alpha1.ValidatePool(&p)
	}
	var sb v1alpha1.Sandbox
	if err := json.Unmarshal(data, &sb); err != nil {
		return err
	}
	sb.Namespace = namespace
	return v1alpha1.ValidateSandbox(&sb)
}

// TestSchemaCasesGo: Go's half of TestSchemaAgreesWithGo, which needs no
// API server: each case of the table is accepted or refused by
// v1alpha1's validation as the table says, naming the field and the rule.
func TestSchemaCasesGo(t *testing.T) {
	for i, tc := range schemaCases() {
		t.Run(tc.name, func(t *testing.T) {
			data := caseJSON(t, i, tc)
			err := goValidate("ns", tc.pool, data)
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("Go: %.300v, want it accepted", err)
			case tc.field != "" && err == nil:
				t.Fatalf("Go accepted it, want it refused naming %s", tc.field)
			case tc.field != "" && (!strings.Contains(err.Error(), tc.field) || !strings.Contains(err.Error(), tc.rule)):
				t.Fatalf("Go: %.300v, want it to name %s and say %q", err, tc.field, tc.rule)
			}
		})
	}
}

// caseJSON is the i-th case's object as JSON.
func caseJSON(t *testing.T, i int, tc schemaCase) []byte {
	t.Helper()
	o := exampleSandbox(fmt.Sprintf("case-%d", i))
	if tc.pool {
		o = examplePool(fmt.Sprintf("case-%d", i))
	}
	tc.set(o)
	data, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
