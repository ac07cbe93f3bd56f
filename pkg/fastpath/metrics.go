package fastpath

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the fast path's Prometheus series.
type Metrics struct {
	creates *prometheus.HistogramVec
	phases  *prometheus.HistogramVec
}

// NewMetrics registers the fast path's series with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	buckets := []float64{.001, .0025, .005, .01, .02, .03, .05, .075, .1, .15, .2, .3, .5, 1, 2.5, 5, 10, 30}
	m := &Metrics{
		creates: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fsb_fastpath_create_seconds",
			Help:    "Time to answer CreateSandbox, by consistency mode and outcome (ok, refused, error).",
			Buckets: buckets,
		}, []string{"mode", "outcome"}),
		phases: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fsb_fastpath_create_phase_seconds",
			Help: "Time of each phase of a create, by mode: allocate (registry), agent (the agent's CreateSandbox), " +
				"store (the object write; after the answer in fast mode), wait (strong mode: object written to Running).",
			Buckets: buckets,
		}, []string{"mode", "phase"}),
	}
	reg.MustRegister(m.creates, m.phases)
	return m
}

func (m *Metrics) observeCreate(mode string, start time.Time, outcome string) {
	if m != nil {
		m.creates.WithLabelValues(mode, outcome).Observe(time.Since(start).Seconds())
	}
}

// Phase times one phase of a create: call the returned func when it ends.
func (m *Metrics) Phase(mode, phase string) func() {
	if m == nil {
		return func() {}
	}
	start := time.Now()
	return func() { m.phases.WithLabelValues(mode, phase).Observe(time.Since(start).Seconds()) }
}
