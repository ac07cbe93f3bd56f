package controller

import (
	"context"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/record"
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

// LogEvent writes one Event as a log line: a Warning as a warning.
func LogEvent(log *slog.Logger, e *corev1.Event) {
	level := slog.LevelInfo
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
