package agentpool

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
)

// LabelPool names the pool an agent pod belongs to.
const LabelPool = "sandbox.fast.io/pool"

// AgentContainer is the name of the agent's container, in the DaemonSet's
// template and in a pool's agentTemplate.
const AgentContainer = "agent"

// BuildPod returns a new agent pod of pool, made from base (the agent
// DaemonSet's pod template, which holds the image, host paths, privileges
// and secrets every agent needs) merged with the pool's agentTemplate:
//
//   - its labels and annotations are added (a pool's value wins);
//   - its nodeSelector, tolerations, affinity and priorityClassName
//     replace the DaemonSet's when set;
//   - for its container named "agent": image and resources replace the
//     DaemonSet's when set, env entries replace those of the same name or
//     are added, args are appended.
//
// A log dir is one agent's (two agents never share one: each removes the
// logs there it does not run), so a pool's agent writes its logs under
// <the DaemonSet's --log-dir>-pools/<its pod UID>, from a host path of its
// own mounted at the same path (containerd's log driver writes on the node
// where the agent reads), instead of the DaemonSet's log dir. The
// janitor's --log-dir <log dir>-pools/* finds them once the agent is gone.
//
// Then the pool's own: the name prefix <pool>-agent- (the API server adds
// five random characters), the label sandbox.fast.io/pool=<pool>, a
// controller owner reference to the pool, and the agent's arguments
// --pool=<pool>, --capacity=<maxSandboxesPerPod> (when set) and --runtimes
// (runc,crun for runtimeType container, gvisor for gvisor). They come last,
// so a template cannot move an agent to another pool.
func BuildPod(base *corev1.PodTemplateSpec, pool *v1alpha1.SandboxPool) (*corev1.Pod, error) {
	if base == nil {
		return nil, fmt.Errorf("no agent pod template")
	}
	tmpl := pool.Spec.AgentTemplate
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: pool.Name + "-agent-",
			Namespace:    pool.Namespace,
			Labels:       merged(base.Labels, tmpl.Labels),
			Annotations:  merged(base.Annotations, tmpl.Annotations),
		},
		Spec: *base.Spec.DeepCopy(),
	}
	pod.Labels[LabelPool] = pool.Name
	if len(pod.Annotations) == 0 {
		pod.Annotations = nil
	}
	owner := metav1.NewControllerRef(pool, v1alpha1.GroupVersion.WithKind("SandboxPool"))
	// The pool's finalizer already outlives its pods; blocking the owner's
	// deletion on them would also need update on sandboxpools/finalizers.
	owner.BlockOwnerDeletion = nil
	pod.OwnerReferences = []metav1.OwnerReference{*owner}

	spec := &pod.Spec
	if tmpl.Spec.NodeSelector != nil {
		spec.NodeSelector = maps.Clone(tmpl.Spec.NodeSelector)
	}
	if tmpl.Spec.Tolerations != nil {
		spec.Tolerations = append([]corev1.Toleration(nil), tmpl.Spec.Tolerations...)
	}
	if tmpl.Spec.Affinity != nil {
		spec.Affinity = tmpl.Spec.Affinity.DeepCopy()
	}
	if tmpl.Spec.PriorityClassName != "" {
		spec.PriorityClassName = tmpl.Spec.PriorityClassName
	}

	agent := container(spec.Containers, AgentContainer)
	if agent == nil {
		return nil, fmt.Errorf("the agent pod template has no container named %q", AgentContainer)
	}
	if over := container(tmpl.Spec.Containers, AgentContainer); over != nil {
		if over.Image != "" {
			agent.Image = over.Image
		}
		if len(over.Resources.Requests) > 0 || len(over.Resources.Limits) > 0 || len(over.Resources.Claims) > 0 {
			agent.Resources = *over.Resources.DeepCopy()
		}
		for _, e := range over.Env {
			agent.Env = setEnv(agent.Env, e)
		}
		agent.Args = append(agent.Args, over.Args...)
	}
	ownLogDir(spec, agent)
	agent.Args = append(agent.Args, "--pool="+pool.Name)
	if n := pool.Spec.MaxSandboxesPerPod; n != nil {
		agent.Args = append(agent.Args, "--capacity="+strconv.Itoa(int(*n)))
	}
	agent.Args = append(agent.Args, "--runtimes="+Runtimes(pool.Spec.RuntimeType))
	return pod, nil
}

// DefaultLogDir is the agent's --log-dir when its arguments give none.
const DefaultLogDir = "/var/log/fsb"

// PoolLogDirs is the host directory under which a pool's agents keep
// their log dirs, beside logDir (the DaemonSet's agents').
func PoolLogDirs(logDir string) string { return path.Clean(logDir) + "-pools" }

// poolLogsVolume is the volume of PoolLogDirs in a pool's agent pod.
const poolLogsVolume = "pool-logs"

// ownLogDir gives the agent container a log dir of its own: the
// DaemonSet's log dir is no longer mounted, PoolLogDirs of it is, and the
// agent's --log-dir is PoolLogDirs/$(POD_UID) (the last --log-dir wins).
func ownLogDir(spec *corev1.PodSpec, agent *corev1.Container) {
	logDir := DefaultLogDir
	for i, arg := range agent.Args {
		switch {
		case strings.HasPrefix(arg, "--log-dir="):
			logDir = strings.TrimPrefix(arg, "--log-dir=")
		case arg == "--log-dir" && i+1 < len(agent.Args):
			logDir = agent.Args[i+1]
		}
	}
	parent := PoolLogDirs(logDir)
	var dropped string
	agent.VolumeMounts = slices.DeleteFunc(agent.VolumeMounts, func(m corev1.VolumeMount) bool {
		if path.Clean(m.MountPath) == path.Clean(logDir) {
			dropped = m.Name
			return true
		}
		return false
	})
	if dropped != "" && !mounted(spec, dropped) {
		spec.Volumes = slices.DeleteFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == dropped })
	}
	hostPathType := corev1.HostPathDirectoryOrCreate
	spec.Volumes = append(spec.Volumes, corev1.Volume{Name: poolLogsVolume,
		VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: parent, Type: &hostPathType}}})
	agent.VolumeMounts = append(agent.VolumeMounts, corev1.VolumeMount{Name: poolLogsVolume, MountPath: parent})
	agent.Env = setEnv(agent.Env, corev1.EnvVar{Name: "POD_UID",
		ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.uid"}}})
	agent.Args = append(agent.Args, "--log-dir="+parent+"/$(POD_UID)")
}

// mounted reports whether any container of spec mounts volume name.
func mounted(spec *corev1.PodSpec, name string) bool {
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range cs {
			for _, m := range c.VolumeMounts {
				if m.Name == name {
					return true
				}
			}
		}
	}
	return false
}

// Runtimes is the agent's --runtimes for a pool's runtimeType.
func Runtimes(runtimeType string) string {
	if runtimeType == v1alpha1.RuntimeTypeGVisor {
		return v1alpha1.RuntimeGVisor
	}
	return v1alpha1.RuntimeRunc + "," + v1alpha1.RuntimeCrun
}

// merged returns a new map of a's entries and b's, b winning.
func merged(a, b map[string]string) map[string]string {
	out := make(map[string]string, len(a)+len(b)+1)
	maps.Copy(out, a)
	maps.Copy(out, b)
	return out
}

// container returns the container named name in cs, or nil.
func container(cs []corev1.Container, name string) *corev1.Container {
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	return nil
}

// setEnv replaces the entry of env named e.Name with e, or appends it.
func setEnv(env []corev1.EnvVar, e corev1.EnvVar) []corev1.EnvVar {
	for i := range env {
		if env[i].Name == e.Name {
			env[i] = e
			return env
		}
	}
	return append(env, e)
}
