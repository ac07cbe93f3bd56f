package janitor

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the janitor's Prometheus series.
type metrics struct {
	passes        *prometheus.CounterVec
	found         *prometheus.GaugeVec
	reaped        *prometheus.CounterVec
	removalErrors *prometheus.CounterVec
	lastPass      prometheus.Gauge
}

// allKinds are the kinds every series is set for, zero included, so that a
// dashboard sees each from the first pass on.
var allKinds = []Kind{KindContainer, KindSnapshot, KindShim, KindMount, KindLog}

// newMetrics makes the series and registers them on reg (none when reg is
// nil).
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fsb_janitor_passes_total",
			Help: "Janitor passes, by result: ok, or error (the controller could not be asked, or a listing failed).",
		}, []string{"result"}),
		found: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fsb_janitor_found",
			Help: "Leftover candidates the last pass found, by kind (kept ones included).",
		}, []string{"kind"}),
		reaped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fsb_janitor_reaped_total",
			Help: "Leftovers removed, by kind (never counted in a dry run).",
		}, []string{"kind"}),
		removalErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fsb_janitor_removal_errors_total",
			Help: "Removals that failed, by kind; the next pass tries again.",
		}, []string{"kind"}),
		lastPass: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fsb_janitor_last_pass_timestamp_seconds",
			Help: "When the last pass ended (Unix seconds), whatever its result.",
		}),
	}
	for _, r := range []string{"ok", "error"} {
		m.passes.WithLabelValues(r)
	}
	for _, k := range allKinds {
		m.found.WithLabelValues(string(k))
		m.reaped.WithLabelValues(string(k))
		m.removalErrors.WithLabelValues(string(k))
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.passes, m.found, m.reaped, m.removalErrors, m.lastPass} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// observe records one pass's report.
func (m *metrics) observe(r Report, err error, end time.Time) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.passes.WithLabelValues(result).Inc()
	for _, k := range allKinds {
		c := r.Kinds[k]
		m.found.WithLabelValues(string(k)).Set(float64(c.Found))
		if !r.DryRun {
			m.reaped.WithLabelValues(string(k)).Add(float64(c.Reaped))
		}
		m.removalErrors.WithLabelValues(string(k)).Add(float64(c.Failed))
	}
	m.lastPass.Set(float64(end.UnixNano()) / 1e9)
}
