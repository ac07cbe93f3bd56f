package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/fast-sandbox/fast-sandbox/pkg/fence"
)

// metrics are the agent's Prometheus series, on a registry of its own.
type metrics struct {
	registry  *prometheus.Registry
	creates   *prometheus.HistogramVec
	deletes   *prometheus.HistogramVec
	sandboxes prometheus.Gauge
	capacity  prometheus.Gauge
	// execs counts exec requests by result; bytes counts the bytes moved
	// through fsb init by kind (exec_output, file_read, file_write).
	execs *prometheus.CounterVec
	bytes *prometheus.CounterVec
	// fenced counts calls refused for an old fence, by call.
	fenced *prometheus.CounterVec
	// warmClaims counts claimable creates by result (hit: a warm sandbox
	// served it; miss: made cold); warm counts warm sandboxes by state
	// (ready, starting); warmRefill and warmClaim time making one warm
	// sandbox and a create served warm.
	warmClaims *prometheus.CounterVec
	warm       *prometheus.GaugeVec
	warmRefill prometheus.Histogram
	warmClaim  prometheus.Histogram
}

func newMetrics(g *fence.Guard) *metrics {
	buckets := []float64{.005, .01, .02, .03, .05, .075, .1, .15, .25, .5, 1, 2.5, 5, 10, 30}
	m := &metrics{
		registry: prometheus.NewRegistry(),
		creates: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fsb_agent_create_seconds",
			Help:    "Time to answer CreateSandbox, by outcome (ok, refused, error).",
			Buckets: buckets,
		}, []string{"outcome"}),
		deletes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fsb_agent_delete_seconds",
			Help:    "Time to answer DeleteSandbox, grace period included, by outcome.",
			Buckets: buckets,
		}, []string{"outcome"}),
		sandboxes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fsb_agent_sandboxes",
			Help: "Sandbox containers this agent holds (running or exited, not yet deleted).",
		}),
		capacity: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fsb_agent_capacity",
			Help: "The most sandboxes this agent runs at once.",
		}),
		execs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fsb_agent_execs_total",
			Help: "Exec requests, by result (started; invalid, refused: the sandbox cannot exec; error: init failed it).",
		}, []string{"result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fsb_agent_exec_bytes_total",
			Help: "Bytes moved through sandboxes' fsb init, by kind (exec_output, file_read, file_write).",
		}, []string{"kind"}),
		fenced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fsb_agent_fenced_calls_total",
			Help: "Calls refused because they came from a deposed controller (their fence below the highest seen), by call.",
		}, []string{"call"}),
		warmClaims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fsb_agent_warm_claims_total",
			Help: "Creates that could claim a warm sandbox, by result (hit: one served it; miss: none was ready, made cold).",
		}, []string{"result"}),
		warm: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fsb_agent_warm_sandboxes",
			Help: "Warm sandboxes this agent holds, by state (ready: running, unclaimed; starting: being made).",
		}, []string{"state"}),
		warmRefill: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fsb_agent_warm_refill_seconds",
			Help:    "Time to make one warm sandbox (container, task, fsb init linked).",
			Buckets: buckets,
		}),
		warmClaim: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fsb_agent_warm_claim_seconds",
			Help:    "Time to answer a CreateSandbox that a warm sandbox served.",
			Buckets: []float64{.001, .002, .003, .005, .0075, .01, .015, .02, .03, .05, .1, .25, 1},
		}),
	}
	fenceGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "fsb_agent_fence",
		Help: "The highest controller fence (pkg/leader: it grows with every change of leader) this agent has seen; 0: none.",
	}, func() float64 { return float64(g.Highest()) })
	m.registry.MustRegister(m.creates, m.deletes, m.sandboxes, m.capacity, m.execs, m.bytes, m.fenced, fenceGauge,
		m.warmClaims, m.warm, m.warmRefill, m.warmClaim,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observeCreate(start time.Time, outcome string) {
	m.creates.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
}

func (m *metrics) observeDelete(start time.Time, outcome string) {
	m.deletes.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
}
