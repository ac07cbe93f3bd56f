package agent

import (
	"encoding/json"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/protobuf/proto"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
	"github.com/fast-sandbox/fast-sandbox/pkg/strictjson"
)

// FuzzCreateRequest follows a CreateSandboxRequest's JSON the way a create
// goes: the fast path's strict decoding and checks, the agent's request
// and checks, then the OCI spec the agent builds. Nothing may panic, a
// request both edges accept must make a spec, and the record containerd
// would be sent must stay under runtime.MaxRecordBytes.
func FuzzCreateRequest(f *testing.F) {
	for _, seed := range []string{
		`{"name":"web","spec":{"image":"localhost/fsb/busybox:latest","command":["sh","-c","echo hi"]}}`,
		`{"name":"web","namespace":"team","labels":{"app":"web"},"spec":{"image":"busybox","args":["httpd","-f"],"envs":[{"name":"A","value":"1"}],"workingDir":"/srv","exposedPorts":[8080],"resources":{"cpu":"500m","memory":"64Mi","pids":"64"},"runtime":"crun","failurePolicy":"FAILURE_POLICY_AUTO_RECREATE","consistencyMode":"CONSISTENCY_MODE_STRONG","recoveryTimeoutSeconds":60}}`,
		`{"name":"x","spec":{"image":"busybox","workingDir":"/aaaa","envs":[{"name":"A B"}]}}`,
		`{"name":"x","spec":{"image":"busybox","resources":{"cpu":"1e12","memory":"1000Ei","pids":"9223372036854775807"}}}`,
		`{"name":"x","spec":{"image":"busybox","failurePolicy":99,"exposedPort":[80]}}`,
		`{"name":"x","spec":{"image":"busybox","noInit":true,"command":["a\u0000b"]}}`,
		`{}`, `[]`, `null`, ``,
	} {
		f.Add([]byte(seed))
	}
	codec := strictjson.New(strictjson.Name)
	cfg := runtime.Config{InitBinary: "/fsb", DefaultPidsLimit: 1024, NetNSPath: "/proc/1/ns/net"}
	img := ocispec.ImageConfig{Cmd: []string{"sh"}, Env: []string{"PATH=/bin"}, WorkingDir: "/"}
	now := time.Now()
	f.Fuzz(func(t *testing.T, data []byte) {
		var req fsbv1.CreateSandboxRequest
		if err := codec.Unmarshal(data, &req); err != nil {
			return
		}
		namespace := req.GetNamespace()
		if namespace == "" {
			namespace = "default"
		}
		if err := v1alpha1.ValidateCreate(namespace, &req, now); err != nil {
			return
		}
		areq := &fsbv1.AgentServiceCreateSandboxRequest{
			SandboxId: "sb-fuzz", Revision: 1, Namespace: namespace, Name: req.GetName(), Spec: req.GetSpec(), Labels: req.GetLabels(),
		}
		if err := validateCreate(areq); err != nil {
			t.Fatalf("the fast path accepted what the agent refuses: %v", err)
		}
		sb := runtime.Sandbox{ID: areq.GetSandboxId(), Revision: 1, Namespace: namespace, Name: areq.GetName(), Spec: areq.GetSpec(), Labels: areq.GetLabels()}
		spec, err := runtime.BuildSpec(cfg, sb, "localhost/fsb/busybox:latest", img)
		if err != nil {
			t.Fatalf("a validated request makes no spec: %v", err)
		}
		oci, err := json.Marshal(spec)
		if err != nil {
			t.Fatalf("marshal the OCI spec: %v", err)
		}
		ext, err := proto.Marshal(areq.GetSpec())
		if err != nil {
			t.Fatalf("marshal the sandbox's spec: %v", err)
		}
		size := len(oci) + len(ext)
		for k, v := range areq.GetLabels() {
			size += len(runtime.LabelUserPrefix) + len(k) + len(v)
		}
		if size > runtime.MaxRecordBytes {
			t.Fatalf("a validated request makes a %d-byte record, past %d", size, runtime.MaxRecordBytes)
		}
	})
}
