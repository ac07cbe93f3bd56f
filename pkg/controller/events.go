package controller

import (
	"context"
	"fmt"
	"log/slog"

	"connectrpc.com/connect"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/record"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
)

// Reasons of the Events the controller records on a Sandbox (kubectl
// describe sbx, kubectl get events). Each message says what happened and,
// where there is one, what the user can do about it.
const (
	// ReasonPlaced: the sandbox has an agent and a sandbox ID (STRONG or
	// kubectl: the controller placed it; FAST: the fast path did).
	ReasonPlaced = "Placed"
	// ReasonFailed: the revision ended with a non-zero exit or an OOM kill,
	// or the agent refused the create.
	ReasonFailed = "Failed"
	// ReasonRecreated: AutoRecreate started the next revision.
	ReasonRecreated = "Recreated"
	// ReasonExpired: spec.expireTime passed; the sandbox is being deleted.
	ReasonExpired = "Expired"
	// ReasonLost: the agent went silent, or the container left it.
	ReasonLost = "Lost"
	// ReasonGaveUp: AutoRecreate found no revision that ran long enough
	// within recoveryTimeoutSeconds.
	ReasonGaveUp = "GaveUp"
	// ReasonUnschedulable: no healthy agent has a free slot; the controller
	// keeps trying.
	ReasonUnschedulable = "Unschedulable"
	// ReasonRemoved: the container is gone and the finalizer is off.
	ReasonRemoved = "Removed"
)

// LogEvents is the recorder of the embedded store: there is no API server to
// keep Events, so each one becomes a log line.
func LogEvents(log *slog.Logger) record.EventRecorder {
	return logRecorder{log: log}
}

// LogEvent writes one Event as a log line: a Warning as a warning, a Normal
// one at debug level (a FAST burst places thousands a minute).
func LogEvent(log *slog.Logger, e *corev1.Event) {
	level := slog.LevelDebug
	if e.Type == corev1.EventTypeWarning {
		level = slog.LevelWarn
	}
	log.Log(context.Background(), level, "event",
		slog.String("reason", e.Reason),
		slog.String("sandbox", e.InvolvedObject.Namespace+"/"+e.InvolvedObject.Name),
		slog.String("message", e.Message))
}

type logRecorder struct{ log *slog.Logger }

func (r logRecorder) Event(obj runtime.Object, eventtype, reason, message string) {
	e := &corev1.Event{Type: eventtype, Reason: reason, Message: message}
	if m, err := meta.Accessor(obj); err == nil {
		e.InvolvedObject.Namespace, e.InvolvedObject.Name = m.GetNamespace(), m.GetName()
	}
	LogEvent(r.log, e)
}

func (r logRecorder) Eventf(obj runtime.Object, eventtype, reason, messageFmt string, args ...any) {
	r.Event(obj, eventtype, reason, fmt.Sprintf(messageFmt, args...))
}

func (r logRecorder) AnnotatedEventf(obj runtime.Object, _ map[string]string, eventtype, reason, messageFmt string, args ...any) {
	r.Eventf(obj, eventtype, reason, messageFmt, args...)
}

// statusEvents records the Events a status write implies, once it landed:
// the first status of a FAST create (the fast path placed it), and each
// change of phase to Failed or Lost, a recovery given up, or no room.
func (c *Controller) statusEvents(sb *v1alpha1.Sandbox, before *v1alpha1.SandboxStatus) {
	st := &sb.Status
	if before.Phase == "" && st.Phase != "" && sb.Annotations[v1alpha1.AnnotationAgent] != "" {
		c.cfg.Events.Eventf(sb, corev1.EventTypeNormal, ReasonPlaced, "placed by the fast path on agent %s%s as sandbox %s",
			st.AssignedPod, onNode(st.NodeName), st.SandboxID)
	}
	if st.Phase != before.Phase {
		switch st.Phase {
		case v1alpha1.PhaseFailed:
			if !gaveUp(st) {
				c.cfg.Events.Eventf(sb, corev1.EventTypeWarning, ReasonFailed, "%s; %s", st.Message, afterFailure(sb))
			}
		case v1alpha1.PhaseLost:
			c.cfg.Events.Eventf(sb, corev1.EventTypeWarning, ReasonLost, "%s; %s", st.Message, afterFailure(sb))
		}
	}
	if gaveUp(st) && !gaveUp(before) {
		c.cfg.Events.Eventf(sb, corev1.EventTypeWarning, ReasonGaveUp,
			"%s; set spec.resetRevision to try again, or delete the sandbox", st.Message)
	}
	if st.Phase == v1alpha1.PhasePending && st.Message != "" && (before.Phase != v1alpha1.PhasePending || before.Message != st.Message) {
		if cond := meta.FindStatusCondition(st.Conditions, ConditionCreated); cond != nil && cond.Reason == reasonText(connect.CodeResourceExhausted.String()) {
			c.cfg.Events.Eventf(sb, corev1.EventTypeWarning, ReasonUnschedulable, "%s (the controller keeps trying)", st.Message)
		}
	}
}

func gaveUp(st *v1alpha1.SandboxStatus) bool {
	cond := meta.FindStatusCondition(st.Conditions, ConditionRecovering)
	return cond != nil && cond.Status == metav1.ConditionFalse && cond.Reason == "GaveUp"
}

// afterFailure tells the user what happens next, and what they can do.
func afterFailure(sb *v1alpha1.Sandbox) string {
	if cond := meta.FindStatusCondition(sb.Status.Conditions, ConditionCreated); cond != nil && cond.Status == metav1.ConditionFalse {
		return "the agent will not run it as specified: change the spec (kubectl edit sbx " + sb.Name + ") or delete it"
	}
	if sb.Spec.FailurePolicy == v1alpha1.FailurePolicyAutoRecreate {
		return "failurePolicy AutoRecreate starts a new revision after a back-off"
	}
	return "failurePolicy Manual: nothing restarts it; read its logs (fsb ctl logs), then set spec.resetRevision to run it again, or delete it"
}

func recreateCause(cause, why string) string {
	switch {
	case cause == "reset":
		return "was reset (spec.resetRevision)"
	case why != "":
		return cause + ": " + why
	}
	return cause
}

func onNode(node string) string {
	if node == "" {
		return ""
	}
	return " on node " + node
}
