package controller

import "github.com/prometheus/client_golang/prometheus"

// Metrics count the lifecycle events the controller causes or sees.
type Metrics struct {
	recreated *prometheus.CounterVec
	lost      prometheus.Counter
	expired   prometheus.Counter
	gaveUp    prometheus.Counter
}

// NewMetrics registers the controller's series with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		recreated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fsb_sandboxes_recreated_total",
			Help: "New revisions started by the controller, by cause: failed (non-zero exit or OOM kill), lost (agent or task gone), reset (resetRevision).",
		}, []string{"cause"}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fsb_sandboxes_lost_total",
			Help: "Sandboxes found Lost: their agent silent past --agent-lost-timeout, or their container gone.",
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fsb_sandboxes_expired_total",
			Help: "Sandboxes stopped and deleted at their expireTime.",
		}),
		gaveUp: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fsb_sandboxes_recovery_given_up_total",
			Help: "AutoRecreate sandboxes left Failed after recoveryTimeoutSeconds without a running revision.",
		}),
	}
	reg.MustRegister(m.recreated, m.lost, m.expired, m.gaveUp)
	return m
}

func (m *Metrics) recreate(cause string) {
	if m != nil {
		m.recreated.WithLabelValues(cause).Inc()
	}
}

func (m *Metrics) lostOne() {
	if m != nil {
		m.lost.Inc()
	}
}

func (m *Metrics) expiredOne() {
	if m != nil {
		m.expired.Inc()
	}
}

func (m *Metrics) gaveUpOne() {
	if m != nil {
		m.gaveUp.Inc()
	}
}
