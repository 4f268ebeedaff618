// Package metrics owns cruzd's Prometheus metrics: what the agent records
// (checkpoints, restores, migrations, failures, rollbacks) through the small
// Recorder interface, what is read when Prometheus scrapes (pods on the node,
// jobs by state, store use), and the HTTP handler that serves them.
//
// Per-job series exist only while the job holds pods: JobActive creates them,
// JobEnded deletes them, and a record for a job that is not active touches
// only the node's totals. Prometheus keeps every label set it has seen in
// memory until it is deleted, so series named by job id must go with the job,
// or a node that runs thousands of jobs grows without bound.
package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Result is how an operation ended, the value of the "result" label.
type Result string

// Results.
const (
	OK     Result = "ok"
	Failed Result = "failed"
)

// RestoreKind says why pods were restored, the value of the "kind" label.
type RestoreKind string

// Restore kinds.
const (
	// Restart is a restore asked for: cruz restart, a Slurm requeue.
	Restart RestoreKind = "restart"
	// Rollback is an automatic recovery after a failure.
	Rollback RestoreKind = "rollback"
)

// Phases of a checkpoint, as the store's manifests name them.
var Phases = []string{"block", "dump", "commit", "resume"}

// Checkpoint is what the agent tells of one committed checkpoint.
type Checkpoint struct {
	Bytes int64
	// Phases are the durations of block, dump, commit and resume.
	Phases map[string]time.Duration
	// Total is the whole checkpoint, from the first block to the end of
	// the resume.
	Total time.Duration
}

// Held is how long the job's traffic was held: until it flowed again after
// the dumps (phase "held": block, dump and resume; the commit follows while
// the job runs), or, for a checkpoint that stopped the job, block, dump and
// commit.
func (c Checkpoint) Held() time.Duration {
	if h, ok := c.Phases["held"]; ok {
		return h
	}
	return c.Phases["block"] + c.Phases["dump"] + c.Phases["commit"]
}

// Recorder is what the agent calls when something happens to a job it
// coordinates. Every method is safe for concurrent use.
type Recorder interface {
	// JobActive starts (or updates) the job's own series: the job holds
	// pods, pods of them.
	JobActive(job, user string, pods int)
	// JobEnded deletes the job's own series.
	JobEnded(job string)
	CheckpointCommitted(job string, c Checkpoint)
	CheckpointFailed(job string)
	Restored(job string, kind RestoreKind, r Result, took time.Duration)
	Migrated(job string, r Result, downtime time.Duration)
	FailureDetected(job string)
}

// Nop records nothing.
type Nop struct{}

func (Nop) JobActive(string, string, int)                       {}
func (Nop) JobEnded(string)                                     {}
func (Nop) CheckpointCommitted(string, Checkpoint)              {}
func (Nop) CheckpointFailed(string)                             {}
func (Nop) Restored(string, RestoreKind, Result, time.Duration) {}
func (Nop) Migrated(string, Result, time.Duration)              {}
func (Nop) FailureDetected(string)                              {}

var _ Recorder = Nop{}

// Source is what is read when Prometheus scrapes. Any field may be nil.
type Source struct {
	// Pods counts the pods on this node, of every job wherever it is
	// coordinated.
	Pods func() int
	// JobStates counts the jobs this agent coordinates by state.
	JobStates func() map[string]int
	// Store measures the checkpoint store: bytes of its files and bytes
	// free on its filesystem.
	Store func() (used, free int64, err error)
}

// Options are a Metrics' fixed parts.
type Options struct {
	Node    string // every series gets node="Node"
	Version string // cruz_info's version label
	CRIU    string // cruz_info's criu label
	Source  Source
	// StoreEvery is how long a measure of the store is reused: walking a
	// store of many checkpoints on a shared filesystem is not free, and
	// Prometheus may scrape every few seconds. Default 30 s.
	StoreEvery time.Duration
}

// Metrics is the real Recorder: the series of one cruzd.
type Metrics struct {
	reg *prometheus.Registry

	checkpoints   *prometheus.CounterVec
	ckptPhase     *prometheus.HistogramVec
	ckptTotal     prometheus.Histogram
	ckptBytes     prometheus.Histogram
	held          prometheus.Histogram
	restores      *prometheus.CounterVec
	restoreTime   *prometheus.HistogramVec
	migrations    *prometheus.CounterVec
	downtime      prometheus.Histogram
	failures      prometheus.Counter
	jobCkpts      *prometheus.CounterVec
	jobLastBytes  *prometheus.GaugeVec
	jobLastHeld   *prometheus.GaugeVec
	jobLastTime   *prometheus.GaugeVec
	jobPods       *prometheus.GaugeVec
	jobRestores   *prometheus.CounterVec
	jobFailures   *prometheus.CounterVec
	jobMigrations *prometheus.CounterVec

	scrape *scrapeCollector

	mu     sync.Mutex
	active map[string]string // job -> its owner's name, for the user label
}

var _ Recorder = (*Metrics)(nil)

// Buckets. Durations from 10 ms to about 10 min; sizes from 1 MiB to
// 64 GiB, by powers of 4.
var (
	secondsBuckets = prometheus.ExponentialBucketsRange(0.01, 600, 16)
	bytesBuckets   = prometheus.ExponentialBuckets(1<<20, 4, 9)
)

// New makes the metrics of one cruzd, registered in a registry of their
// own (with Go's and the process's collectors).
func New(o Options) *Metrics {
	reg := prometheus.NewRegistry()
	r := prometheus.WrapRegistererWith(prometheus.Labels{"node": o.Node}, reg)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := factory{r}
	jobLabels := []string{"job", "user"}
	m := &Metrics{
		reg: reg,
		checkpoints: f.counterVec("cruz_checkpoints_total",
			"Checkpoints of the jobs this agent coordinates, by result (ok: committed; failed: abandoned, the job ran on).", "result"),
		ckptPhase: f.histogramVec("cruz_checkpoint_phase_seconds",
			"Duration of each phase of committed checkpoints: block (hold traffic), dump (CRIU, all pods), commit (store), resume.", secondsBuckets, "phase"),
		ckptTotal: f.histogram("cruz_checkpoint_duration_seconds",
			"Duration of committed checkpoints, from the first block to the end of the resume.", secondsBuckets),
		ckptBytes: f.histogram("cruz_checkpoint_bytes",
			"Size of committed checkpoints in the store.", bytesBuckets),
		held: f.histogram("cruz_checkpoint_traffic_held_seconds",
			"How long committed checkpoints held the job's traffic (block, dump and resume; with --stop, block, dump and commit).", secondsBuckets),
		restores: f.counterVec("cruz_restores_total",
			"Restores of jobs from a checkpoint: kind restart (cruz restart, a Slurm requeue) or rollback (automatic recovery), by result.", "kind", "result"),
		restoreTime: f.histogramVec("cruz_restore_duration_seconds",
			"Duration of successful restores, by kind.", secondsBuckets, "kind"),
		migrations: f.counterVec("cruz_migrations_total",
			"Live migrations of pods of the jobs this agent coordinates, by result.", "result"),
		downtime: f.histogram("cruz_migration_downtime_seconds",
			"How long successful migrations held the moved pod (dump, transfer, restore, release).", secondsBuckets),
		failures: f.counter("cruz_failures_detected_total",
			"Failures detected in the jobs this agent coordinates (a rank, pod, node or coordinator lost)."),
		jobCkpts: f.counterVec("cruz_job_checkpoints_total",
			"Checkpoints of a running job, by result.", "job", "user", "result"),
		jobLastBytes: f.gaugeVec("cruz_job_last_checkpoint_bytes",
			"Size of a running job's last committed checkpoint.", jobLabels...),
		jobLastHeld: f.gaugeVec("cruz_job_last_checkpoint_traffic_held_seconds",
			"How long a running job's last committed checkpoint held its traffic.", jobLabels...),
		jobLastTime: f.gaugeVec("cruz_job_last_checkpoint_timestamp_seconds",
			"When a running job's last checkpoint was committed (Unix time).", jobLabels...),
		jobPods: f.gaugeVec("cruz_job_pods",
			"Pods of a running job, on all of its nodes.", jobLabels...),
		jobRestores: f.counterVec("cruz_job_restores_total",
			"Restores of a running job since this agent started coordinating it, by kind.", "job", "user", "kind"),
		jobFailures: f.counterVec("cruz_job_failures_detected_total",
			"Failures detected in a running job.", jobLabels...),
		jobMigrations: f.counterVec("cruz_job_migrations_total",
			"Live migrations of a running job's pods, by result.", "job", "user", "result"),
		active: map[string]string{},
	}
	// The totals exist from the start at 0, so that rate() and increase()
	// see their first increment.
	for _, res := range []Result{OK, Failed} {
		m.checkpoints.WithLabelValues(string(res))
		m.migrations.WithLabelValues(string(res))
		for _, k := range []RestoreKind{Restart, Rollback} {
			m.restores.WithLabelValues(string(k), string(res))
		}
	}
	info := f.gaugeVec("cruz_info", "The agent's version and CRIU's (always 1).", "version", "criu")
	info.WithLabelValues(o.Version, o.CRIU).Set(1)
	m.scrape = newScrapeCollector(o)
	r.MustRegister(m.scrape)
	return m
}

// Handler serves the metrics in Prometheus's text (or protobuf) format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Registry is where the metrics live, for tests (prometheus/testutil).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func (m *Metrics) JobActive(job, user string, pods int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.active[job] = user
	m.jobPods.WithLabelValues(job, user).Set(float64(pods))
	for _, res := range []Result{OK, Failed} {
		m.jobCkpts.WithLabelValues(job, user, string(res))
	}
}

func (m *Metrics) JobEnded(job string) {
	// cruz rm --checkpoints may have emptied part of the store.
	m.scrape.storeChanged()
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.active, job)
	only := prometheus.Labels{"job": job}
	for _, v := range []interface {
		DeletePartialMatch(prometheus.Labels) int
	}{m.jobCkpts, m.jobLastBytes, m.jobLastHeld, m.jobLastTime, m.jobPods, m.jobRestores, m.jobFailures, m.jobMigrations} {
		v.DeletePartialMatch(only)
	}
}

func (m *Metrics) CheckpointCommitted(job string, c Checkpoint) {
	m.scrape.storeChanged()
	m.checkpoints.WithLabelValues(string(OK)).Inc()
	for _, p := range Phases {
		if d, ok := c.Phases[p]; ok {
			m.ckptPhase.WithLabelValues(p).Observe(d.Seconds())
		}
	}
	m.ckptTotal.Observe(c.Total.Seconds())
	m.ckptBytes.Observe(float64(c.Bytes))
	m.held.Observe(c.Held().Seconds())
	m.mu.Lock()
	defer m.mu.Unlock()
	if u, ok := m.active[job]; ok {
		m.jobCkpts.WithLabelValues(job, u, string(OK)).Inc()
		m.jobLastBytes.WithLabelValues(job, u).Set(float64(c.Bytes))
		m.jobLastHeld.WithLabelValues(job, u).Set(c.Held().Seconds())
		m.jobLastTime.WithLabelValues(job, u).SetToCurrentTime()
	}
}

func (m *Metrics) CheckpointFailed(job string) {
	m.checkpoints.WithLabelValues(string(Failed)).Inc()
	m.mu.Lock()
	defer m.mu.Unlock()
	if u, ok := m.active[job]; ok {
		m.jobCkpts.WithLabelValues(job, u, string(Failed)).Inc()
	}
}

func (m *Metrics) Restored(job string, kind RestoreKind, r Result, took time.Duration) {
	m.restores.WithLabelValues(string(kind), string(r)).Inc()
	if r == OK {
		m.restoreTime.WithLabelValues(string(kind)).Observe(took.Seconds())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if u, ok := m.active[job]; ok && r == OK {
		m.jobRestores.WithLabelValues(job, u, string(kind)).Inc()
	}
}

func (m *Metrics) Migrated(job string, r Result, downtime time.Duration) {
	m.migrations.WithLabelValues(string(r)).Inc()
	if r == OK {
		m.downtime.Observe(downtime.Seconds())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if u, ok := m.active[job]; ok {
		m.jobMigrations.WithLabelValues(job, u, string(r)).Inc()
	}
}

func (m *Metrics) FailureDetected(job string) {
	m.failures.Inc()
	m.mu.Lock()
	defer m.mu.Unlock()
	if u, ok := m.active[job]; ok {
		m.jobFailures.WithLabelValues(job, u).Inc()
	}
}

// factory makes and registers metrics.
type factory struct{ r prometheus.Registerer }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.r.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.r.MustRegister(c)
	return c
}

func (f factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	f.r.MustRegister(g)
	return g
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	f.r.MustRegister(h)
	return h
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	f.r.MustRegister(h)
	return h
}
