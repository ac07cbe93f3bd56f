package fastpath

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the fast path's Prometheus series.
type Metrics struct {
	creates *prometheus.HistogramVec
	phases  *prometheus.HistogramVec
	execs   *prometheus.CounterVec
	bytes   *prometheus.CounterVec
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
	m.execs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fsb_fastpath_execs_total",
		Help: "Execs (Exec, ExecInteractive) by result: started, or the code of the error that ended them before the process started.",
	}, []string{"result"})
	m.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fsb_fastpath_bytes_total",
		Help: "Bytes the fast path relayed, by kind: exec_output, exec_input, file_read, file_write.",
	}, []string{"kind"})
	// Each series shows from the start, at zero, rather than from its
	// first event.
	m.execs.WithLabelValues("started")
	for _, kind := range []string{bytesExecOutput, bytesExecInput, bytesFileRead, bytesFileWrite} {
		m.bytes.WithLabelValues(kind)
	}
	reg.MustRegister(m.creates, m.phases, m.execs, m.bytes)
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

// Kinds of bytes moved, as metric labels.
const (
	bytesExecOutput = "exec_output"
	bytesExecInput  = "exec_input"
	bytesFileRead   = "file_read"
	bytesFileWrite  = "file_write"
)

func (m *Metrics) execStarted(result string) {
	if m != nil {
		m.execs.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) moved(kind string, n int) {
	if m != nil && n > 0 {
		m.bytes.WithLabelValues(kind).Add(float64(n))
	}
}
