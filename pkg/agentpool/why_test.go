package agentpool

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestPendingWhy: a pool's Ready message says why its pending pods bring
// no agent: unschedulable, or a container waiting with its last exit and
// last words; a pod merely starting says nothing.
func TestPendingWhy(t *testing.T) {
	pod := func(name string, set func(*corev1.PodStatus)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}}
		set(&p.Status)
		return p
	}
	crashing := pod("p-crash", func(s *corev1.PodStatus) {
		s.ContainerStatuses = []corev1.ContainerStatus{{
			Name:  "agent",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 20s restarting"}},
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1,
				Message: `{"level":"INFO","msg":"starting"}` + "\nfsb: log dir /var/log/fsb is in use by another agent\n"}},
		}}
	})
	unschedulable := pod("p-nowhere", func(s *corev1.PodStatus) {
		s.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
			Reason: "Unschedulable", Message: "0/1 nodes are available: 1 Insufficient cpu."}}
	})
	starting := pod("p-starting", func(s *corev1.PodStatus) {
		s.ContainerStatuses = []corev1.ContainerStatus{{Name: "agent",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}}
	})
	for _, tc := range []struct {
		name string
		pods []*corev1.Pod
		want string
	}{
		{"crash loop", []*corev1.Pod{crashing},
			"p-crash: container agent CrashLoopBackOff (last exit 1: fsb: log dir /var/log/fsb is in use by another agent)"},
		{"unschedulable", []*corev1.Pod{unschedulable}, "p-nowhere: not scheduled: 0/1 nodes are available: 1 Insufficient cpu."},
		{"starting says nothing", []*corev1.Pod{starting}, ""},
		{"at most three", []*corev1.Pod{starting, crashing, unschedulable, crashing, crashing}, "…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := pendingWhy(tc.pods)
			if tc.want == "…" {
				if strings.Count(got, "; ") != 3 || !strings.HasSuffix(got, "; …") {
					t.Errorf("pendingWhy = %q, want three pods explained, then …", got)
				}
				return
			}
			if got != tc.want {
				t.Errorf("pendingWhy = %q, want %q", got, tc.want)
			}
		})
	}
}
