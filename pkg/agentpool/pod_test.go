package agentpool

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
)

// daemonSetTemplate is the shape of deploy/base/agent.yaml's pod template.
func daemonSetTemplate() *corev1.PodTemplateSpec {
	return &corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{
			"app.kubernetes.io/name": "fsb", "app.kubernetes.io/component": "agent",
		}},
		Spec: corev1.PodSpec{
			ServiceAccountName: "fsb-agent",
			HostPID:            true,
			NodeSelector:       map[string]string{"kubernetes.io/os": "linux"},
			InitContainers:     []corev1.Container{{Name: "install", Image: "localhost/fsb/fsb:latest"}},
			Containers: []corev1.Container{{
				Name: "agent", Image: "localhost/fsb/fsb:latest",
				Args: []string{"agent", "--agent-id=$(POD_UID)", "--log-dir=/var/log/fsb"},
				Env:  []corev1.EnvVar{{Name: "POD_UID"}, {Name: "AGENT_CAPACITY", Value: "10"}},
				VolumeMounts: []corev1.VolumeMount{{Name: "secrets", MountPath: "/etc/fsb"},
					{Name: "logs", MountPath: "/var/log/fsb"}},
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceCPU: resource.MustParse("100m"),
				}},
			}},
			Volumes: []corev1.Volume{{Name: "secrets"}, {Name: "logs"}},
		},
	}
}

func TestBuildPod(t *testing.T) {
	pool := func(set func(*v1alpha1.SandboxPool)) *v1alpha1.SandboxPool {
		p := &v1alpha1.SandboxPool{
			ObjectMeta: metav1.ObjectMeta{Name: "gpu", Namespace: "fsb-system", UID: "pool-uid"},
			Spec:       v1alpha1.SandboxPoolSpec{Capacity: &v1alpha1.PoolCapacity{PoolMin: 1, PoolMax: 3}},
		}
		if set != nil {
			set(p)
		}
		return p
	}
	for _, tc := range []struct {
		name  string
		pool  *v1alpha1.SandboxPool
		check func(t *testing.T, pod *corev1.Pod)
	}{
		{"defaults from the DaemonSet", pool(nil), func(t *testing.T, pod *corev1.Pod) {
			if pod.GenerateName != "gpu-agent-" || pod.Namespace != "fsb-system" {
				t.Errorf("name %q in %q, want gpu-agent-… in fsb-system", pod.GenerateName, pod.Namespace)
			}
			want := map[string]string{"app.kubernetes.io/name": "fsb", "app.kubernetes.io/component": "agent", LabelPool: "gpu"}
			if !equalMaps(pod.Labels, want) {
				t.Errorf("labels %v, want %v", pod.Labels, want)
			}
			if len(pod.OwnerReferences) != 1 || pod.OwnerReferences[0].UID != "pool-uid" || !ptr.Deref(pod.OwnerReferences[0].Controller, false) ||
				pod.OwnerReferences[0].Kind != "SandboxPool" || pod.OwnerReferences[0].APIVersion != "sandbox.fast.io/v1alpha1" {
				t.Errorf("owner references %+v, want the pool as controller", pod.OwnerReferences)
			}
			a := pod.Spec.Containers[0]
			if want := []string{"agent", "--agent-id=$(POD_UID)", "--log-dir=/var/log/fsb", "--log-dir=/var/log/fsb-pools/$(POD_UID)",
				"--pool=gpu", "--runtimes=runc,crun"}; !slices.Equal(a.Args, want) {
				t.Errorf("args %q, want %q (no --capacity: the agent's own)", a.Args, want)
			}
			if a.Image != "localhost/fsb/fsb:latest" || !pod.Spec.HostPID || pod.Spec.ServiceAccountName != "fsb-agent" ||
				len(pod.Spec.InitContainers) != 1 || pod.Spec.NodeSelector["kubernetes.io/os"] != "linux" {
				t.Errorf("the DaemonSet's pod spec was not kept: %+v", pod.Spec)
			}
			// A log dir of its own: the DaemonSet's is not mounted, the
			// pools' host dir is, at the same path.
			var volumes, mounts []string
			for _, v := range pod.Spec.Volumes {
				host := ""
				if v.HostPath != nil {
					host = v.HostPath.Path
				}
				volumes = append(volumes, v.Name+"="+host)
			}
			for _, m := range a.VolumeMounts {
				mounts = append(mounts, m.Name+"="+m.MountPath)
			}
			if want := "secrets= pool-logs=/var/log/fsb-pools"; strings.Join(volumes, " ") != want {
				t.Errorf("volumes %q, want %q", strings.Join(volumes, " "), want)
			}
			if want := "secrets=/etc/fsb pool-logs=/var/log/fsb-pools"; strings.Join(mounts, " ") != want {
				t.Errorf("mounts %q, want %q", strings.Join(mounts, " "), want)
			}
			if uid := a.Env[0]; uid.Name != "POD_UID" || uid.ValueFrom == nil || uid.ValueFrom.FieldRef.FieldPath != "metadata.uid" {
				t.Errorf("POD_UID is %+v, want the pod's UID (the log dir is named by it)", uid)
			}
		}},
		{"capacity and gvisor", pool(func(p *v1alpha1.SandboxPool) {
			p.Spec.MaxSandboxesPerPod = ptr.To[int32](2)
			p.Spec.RuntimeType = v1alpha1.RuntimeTypeGVisor
		}), func(t *testing.T, pod *corev1.Pod) {
			if got, want := pod.Spec.Containers[0].Args[4:], []string{"--pool=gpu", "--capacity=2", "--runtimes=gvisor"}; !slices.Equal(got, want) {
				t.Errorf("args %q, want %q", got, want)
			}
		}},
		{"the agentTemplate merged", pool(func(p *v1alpha1.SandboxPool) {
			p.Spec.RuntimeType = v1alpha1.RuntimeTypeContainer
			p.Spec.AgentTemplate = corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      map[string]string{"team": "ml", LabelPool: "other"},
					Annotations: map[string]string{"note": "gpu nodes"},
				},
				Spec: corev1.PodSpec{
					NodeSelector:      map[string]string{"gpu": "true"},
					Tolerations:       []corev1.Toleration{{Key: "gpu", Operator: corev1.TolerationOpExists}},
					PriorityClassName: "high",
					Containers: []corev1.Container{{
						Name: "agent", Image: "registry.example/fsb:v2", Args: []string{"--log-level=debug"},
						Env: []corev1.EnvVar{{Name: "AGENT_CAPACITY", Value: "4"}, {Name: "EXTRA", Value: "1"}},
						Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
							corev1.ResourceMemory: resource.MustParse("1Gi"),
						}},
					}, {Name: "sidecar", Image: "ignored"}},
				},
			}
		}), func(t *testing.T, pod *corev1.Pod) {
			if pod.Labels["team"] != "ml" || pod.Labels[LabelPool] != "gpu" || pod.Annotations["note"] != "gpu nodes" {
				t.Errorf("labels %v annotations %v: want team=ml added, the pool label kept", pod.Labels, pod.Annotations)
			}
			if !equalMaps(pod.Spec.NodeSelector, map[string]string{"gpu": "true"}) || len(pod.Spec.Tolerations) != 1 || pod.Spec.PriorityClassName != "high" {
				t.Errorf("scheduling not replaced: %v %v %q", pod.Spec.NodeSelector, pod.Spec.Tolerations, pod.Spec.PriorityClassName)
			}
			if len(pod.Spec.Containers) != 1 {
				t.Errorf("%d containers, want the agent only (other template containers are not merged)", len(pod.Spec.Containers))
			}
			a := pod.Spec.Containers[0]
			if a.Image != "registry.example/fsb:v2" {
				t.Errorf("image %q", a.Image)
			}
			if want := []string{"agent", "--agent-id=$(POD_UID)", "--log-dir=/var/log/fsb", "--log-level=debug",
				"--log-dir=/var/log/fsb-pools/$(POD_UID)", "--pool=gpu", "--runtimes=runc,crun"}; !slices.Equal(a.Args, want) {
				t.Errorf("args %q, want %q", a.Args, want)
			}
			var env []string
			for _, e := range a.Env {
				env = append(env, e.Name+"="+e.Value)
			}
			if want := "POD_UID= AGENT_CAPACITY=4 EXTRA=1"; strings.Join(env, " ") != want {
				t.Errorf("env %q, want %q", strings.Join(env, " "), want)
			}
			if _, ok := a.Resources.Requests[corev1.ResourceCPU]; ok || a.Resources.Limits.Memory().String() != "1Gi" {
				t.Errorf("resources %+v, want the template's only", a.Resources)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := daemonSetTemplate()
			pod, err := BuildPod(base, tc.pool)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, pod)
			if !slices.Equal(base.Spec.Containers[0].Args, daemonSetTemplate().Spec.Containers[0].Args) ||
				len(base.Labels) != 2 || base.Spec.Containers[0].Env[1].Value != "10" {
				t.Errorf("BuildPod changed the DaemonSet's template: %+v", base)
			}
		})
	}

	base := daemonSetTemplate()
	base.Spec.Containers[0].Name = "main"
	if _, err := BuildPod(base, pool(nil)); err == nil || !strings.Contains(err.Error(), `no container named "agent"`) {
		t.Errorf("a template without an agent container: %v, want an error naming it", err)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
