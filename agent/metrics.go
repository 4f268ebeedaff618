package agent

// The agent's Prometheus metrics (internal/metrics owns them): what is read
// at a scrape, the server on metrics.listen, and the small helpers the
// protocol code calls.

import (
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/metrics"
	"github.com/cruz-hpc/cruz/internal/version"
)

// newMetrics makes the agent's metrics, reading pods, jobs and the store at
// each scrape.
func (a *Agent) newMetrics() *metrics.Metrics {
	return metrics.New(metrics.Options{
		Node: a.node, Version: version.String(), CRIU: a.CRIUVersion(),
		Source: metrics.Source{
			Pods: func() int {
				n := 0
				for _, s := range a.local.Sets(func(string) bool { return true }) {
					n += len(s.Pods)
				}
				return n
			},
			JobStates: func() map[string]int {
				out := map[string]int{}
				for _, j := range a.jobList() {
					out[string(j.state())]++
				}
				return out
			},
			Store: func() (int64, int64, error) {
				used, free, err := a.store.Usage()
				if err != nil {
					a.log.Warn("measuring the checkpoint store for the metrics", "err", err)
				}
				return used, free, err
			},
		},
	})
}

// listenMetrics opens metrics.listen; no server if it is empty.
func (a *Agent) listenMetrics() (*http.Server, net.Listener, error) {
	addr := a.cfg.Metrics.Listen
	if addr == "" || a.metricsHandler == nil {
		return nil, nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s (metrics.listen): %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.metricsHandler)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return srv, ln, nil
}

// trackJob keeps the job's own series while it holds pods, and drops
// them when it stops holding them.
func (a *Agent) trackJob(j *job, state api.JobState) {
	if !state.HoldsPods() {
		a.metrics.JobEnded(j.id())
		return
	}
	j.mu.Lock()
	user, pods := j.rec.User, len(j.rec.Pods)
	j.mu.Unlock()
	a.metrics.JobActive(j.id(), user, pods)
}

// checkpointMetrics converts a manifest's phases (milliseconds) for the
// metrics.
func checkpointMetrics(bytes int64, phasesMS map[string]int64, total time.Duration) metrics.Checkpoint {
	c := metrics.Checkpoint{Bytes: bytes, Total: total, Phases: map[string]time.Duration{}}
	for p, ms := range phasesMS {
		c.Phases[p] = time.Duration(ms) * time.Millisecond
	}
	return c
}
