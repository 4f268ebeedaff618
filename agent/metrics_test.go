package agent

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sample is the value of the series name{labels} (node="n1" implied), and
// whether it exists.
func sample(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	fams, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	metric:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metric
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount()), true
			}
		}
	}
	return 0, false
}

// TestMetricsFollowTheProtocol drives the coordinator against fake nodes
// and checks that what a dashboard shows moves with it: checkpoints by
// result, migrations, a failure and its rollback, and the job's own series
// gone once it stops.
func TestMetricsFollowTheProtocol(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2", "n3")
	m := a.newMetrics()
	a.metrics = m
	reg := m.Registry()
	j := addJob(t, a, fc, "job1", twoNodes)
	a.setState(j, api.StateRunning, "")
	val := func(name string, labels map[string]string) float64 {
		v, ok := sample(t, reg, name, labels)
		require.True(t, ok, "no series %s%v", name, labels)
		return v
	}
	job := map[string]string{"job": "job1", "user": "tester", "node": "n1"}
	assert.Equal(t, 4.0, val("cruz_job_pods", job))
	assert.Equal(t, 1.0, val("cruz_jobs", map[string]string{"state": "running"}))

	_, err := a.checkpointLocked(context.Background(), j, false)
	require.NoError(t, err)
	fc.set(func() { fc.node("n2").fail[api.OpDump] = errors.New("criu dump failed") })
	_, err = a.checkpointLocked(context.Background(), j, false)
	require.Error(t, err)
	fc.set(func() { delete(fc.node("n2").fail, api.OpDump) })

	assert.Equal(t, 1.0, val("cruz_checkpoints_total", map[string]string{"result": "ok"}))
	assert.Equal(t, 1.0, val("cruz_checkpoints_total", map[string]string{"result": "failed"}))
	assert.Equal(t, 1.0, val("cruz_job_checkpoints_total", map[string]string{"job": "job1", "result": "ok"}))
	assert.Equal(t, 1.0, val("cruz_job_checkpoints_total", map[string]string{"job": "job1", "result": "failed"}))
	for _, p := range metrics.Phases {
		assert.Equal(t, 1.0, val("cruz_checkpoint_phase_seconds", map[string]string{"phase": p}), "phase %s observed once", p)
	}
	assert.Equal(t, 1.0, val("cruz_checkpoint_bytes", nil))
	bytes := val("cruz_job_last_checkpoint_bytes", job)
	assert.Greater(t, bytes, 0.0, "the fake nodes wrote images")

	_, err = a.migrateLocked(context.Background(), j, "job1-r1", "n3")
	require.NoError(t, err)
	fc.set(func() { fc.node("n1").fail[api.OpRestore] = errors.New("criu restore failed") })
	_, err = a.migrateLocked(context.Background(), j, "job1-r2", "n1")
	require.Error(t, err)
	fc.set(func() { delete(fc.node("n1").fail, api.OpRestore) })
	// Refused before any pod is touched: not a failed migration.
	_, err = a.migrateLocked(context.Background(), j, "job1-r1", "n3")
	require.ErrorIs(t, err, api.ErrInvalid)
	assert.Equal(t, 1.0, val("cruz_migrations_total", map[string]string{"result": "ok"}))
	assert.Equal(t, 1.0, val("cruz_migrations_total", map[string]string{"result": "failed"}))
	assert.Equal(t, 1.0, val("cruz_migration_downtime_seconds", nil))

	// n2 dies; the job rolls back to ckpt-0001.
	fc.set(func() {
		fc.node("n2").down = true
		fc.node("n2").pods = map[string]bool{}
	})
	j.rec.Spares = []string{"n3"}
	a.recoverJob(j, j.gen, "node n2 has not answered for 5s", "n2", true)
	require.Equal(t, api.StateRunning, j.state())
	j.stopSupervisor()
	j.mu.Lock()
	j.gen++ // end the restored run's watchers
	j.mu.Unlock()
	assert.Equal(t, 1.0, val("cruz_failures_detected_total", nil))
	assert.Equal(t, 1.0, val("cruz_job_failures_detected_total", job))
	assert.Equal(t, 1.0, val("cruz_restores_total", map[string]string{"kind": "rollback", "result": "ok"}))
	assert.Equal(t, 1.0, val("cruz_job_restores_total", map[string]string{"job": "job1", "kind": "rollback"}))

	// A stop-checkpoint ends the run: the commit counts, the job's series go.
	_, err = a.checkpointLocked(context.Background(), j, true)
	require.NoError(t, err)
	assert.Equal(t, 2.0, val("cruz_checkpoints_total", map[string]string{"result": "ok"}))
	for _, name := range []string{"cruz_job_pods", "cruz_job_checkpoints_total", "cruz_job_last_checkpoint_bytes", "cruz_job_restores_total", "cruz_job_failures_detected_total", "cruz_job_migrations_total"} {
		_, ok := sample(t, reg, name, map[string]string{"job": "job1"})
		assert.False(t, ok, "%s of the stopped job is gone", name)
	}
	assert.Equal(t, 1.0, val("cruz_jobs", map[string]string{"state": "stopped"}))

	// cruz rm: the job is gone from the agent's own count too.
	require.NoError(t, a.Remove(rootCaller, "job1", false))
	_, ok := sample(t, reg, "cruz_jobs", map[string]string{"state": "stopped"})
	assert.False(t, ok)
}

// TestMetricsPortInUse: cruzd does not start when metrics.listen is taken,
// and says which key to change.
func TestMetricsPortInUse(t *testing.T) {
	a, _ := newTestAgent(t, "n1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	a.cfg.Metrics.Listen = ln.Addr().String()
	m := a.newMetrics()
	a.metrics, a.metricsHandler = m, m.Handler()
	_, _, err = a.listenMetrics()
	require.Error(t, err)
	assert.ErrorContains(t, err, "listen on "+ln.Addr().String()+" (metrics.listen)")
	assert.ErrorContains(t, err, "address already in use")
}
