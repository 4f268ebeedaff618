package metrics

import (
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newTest(t *testing.T, src Source) *Metrics {
	t.Helper()
	return New(Options{Node: "n1", Version: "1.0 (abc)", CRIU: "4.2.1", Source: src})
}

func ckpt(bytes int64, ms ...int) Checkpoint {
	c := Checkpoint{Bytes: bytes, Phases: map[string]time.Duration{}}
	for i, p := range Phases {
		c.Phases[p] = time.Duration(ms[i]) * time.Millisecond
		c.Total += c.Phases[p]
	}
	return c
}

func TestCheckpointCounters(t *testing.T) {
	m := newTest(t, Source{})
	m.JobActive("j1", "alice", 3)
	m.CheckpointCommitted("j1", ckpt(4<<20, 10, 200, 30, 5))
	m.CheckpointCommitted("j1", ckpt(8<<20, 20, 300, 40, 5))
	m.CheckpointFailed("j1")

	assert.Equal(t, 2.0, testutil.ToFloat64(m.checkpoints.WithLabelValues("ok")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.checkpoints.WithLabelValues("failed")))
	assert.Equal(t, 2.0, testutil.ToFloat64(m.jobCkpts.WithLabelValues("j1", "alice", "ok")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.jobCkpts.WithLabelValues("j1", "alice", "failed")))
	assert.Equal(t, float64(8<<20), testutil.ToFloat64(m.jobLastBytes.WithLabelValues("j1", "alice")))
	// Held: block + dump + commit of the last one, not the resume.
	assert.InDelta(t, 0.36, testutil.ToFloat64(m.jobLastHeld.WithLabelValues("j1", "alice")), 1e-9)
	assert.InDelta(t, float64(time.Now().Unix()), testutil.ToFloat64(m.jobLastTime.WithLabelValues("j1", "alice")), 5)
	assert.Equal(t, 3.0, testutil.ToFloat64(m.jobPods.WithLabelValues("j1", "alice")))

	// The histograms, as Prometheus reads them: one sample per checkpoint
	// and phase, with the sums of the seconds and bytes.
	want := `
# HELP cruz_checkpoint_traffic_held_seconds How long committed checkpoints held the job's traffic (block, dump and resume; with --stop, block, dump and commit).
# TYPE cruz_checkpoint_traffic_held_seconds histogram
`
	got := scrape(t, m)
	assert.Contains(t, got, strings.TrimSpace(want))
	assert.Contains(t, got, `cruz_checkpoint_traffic_held_seconds_count{node="n1"} 2`)
	assert.Contains(t, got, `cruz_checkpoint_traffic_held_seconds_sum{node="n1"} 0.6`)
	assert.Contains(t, got, `cruz_checkpoint_phase_seconds_count{node="n1",phase="dump"} 2`)
	assert.Contains(t, got, `cruz_checkpoint_phase_seconds_sum{node="n1",phase="dump"} 0.5`)
	assert.Contains(t, got, `cruz_checkpoint_phase_seconds_count{node="n1",phase="resume"} 2`)
	assert.Contains(t, got, `cruz_checkpoint_bytes_sum{node="n1"} 1.2582912e+07`)
	assert.Contains(t, got, `cruz_checkpoint_duration_seconds_count{node="n1"} 2`)
	assert.Contains(t, got, `cruz_info{criu="4.2.1",node="n1",version="1.0 (abc)"} 1`)
}

func TestTotalsStartAtZero(t *testing.T) {
	got := scrape(t, newTest(t, Source{}))
	for _, s := range []string{
		`cruz_checkpoints_total{node="n1",result="ok"} 0`,
		`cruz_checkpoints_total{node="n1",result="failed"} 0`,
		`cruz_restores_total{kind="rollback",node="n1",result="ok"} 0`,
		`cruz_restores_total{kind="restart",node="n1",result="failed"} 0`,
		`cruz_migrations_total{node="n1",result="ok"} 0`,
		`cruz_failures_detected_total{node="n1"} 0`,
	} {
		assert.Contains(t, got, s)
	}
	assert.NotContains(t, got, "cruz_job_", "no job, no per-job series")
}

// TestJobSeriesGoWithTheJob: a job's series exist while it holds pods, and
// a record that comes after its end (a stop-checkpoint's commit, a late
// failure) counts in the node's totals without bringing them back.
func TestJobSeriesGoWithTheJob(t *testing.T) {
	m := newTest(t, Source{})
	m.JobActive("j1", "alice", 2)
	m.JobActive("j2", "bob", 1)
	m.CheckpointCommitted("j1", ckpt(1<<20, 1, 2, 3, 4))
	m.Restored("j1", Rollback, OK, time.Second)
	m.Migrated("j1", OK, 300*time.Millisecond)
	m.FailureDetected("j1")
	got := scrape(t, m)
	for _, s := range []string{
		`cruz_job_checkpoints_total{job="j1",node="n1",result="ok",user="alice"} 1`,
		`cruz_job_restores_total{job="j1",kind="rollback",node="n1",user="alice"} 1`,
		`cruz_job_migrations_total{job="j1",node="n1",result="ok",user="alice"} 1`,
		`cruz_job_failures_detected_total{job="j1",node="n1",user="alice"} 1`,
		`cruz_job_pods{job="j2",node="n1",user="bob"} 1`,
	} {
		assert.Contains(t, got, s)
	}

	m.JobEnded("j1")
	m.CheckpointCommitted("j1", ckpt(1<<20, 1, 2, 3, 4))
	m.CheckpointFailed("j1")
	m.FailureDetected("j1")
	m.Migrated("j1", Failed, 0)
	m.Restored("j1", Restart, Failed, 0)
	got = scrape(t, m)
	assert.NotContains(t, got, `job="j1"`)
	assert.Contains(t, got, `cruz_job_pods{job="j2",node="n1",user="bob"} 1`, "another job's series stay")
	assert.Contains(t, got, `cruz_checkpoints_total{node="n1",result="ok"} 2`)
	assert.Contains(t, got, `cruz_checkpoints_total{node="n1",result="failed"} 1`)
	assert.Contains(t, got, `cruz_failures_detected_total{node="n1"} 2`)
	assert.Contains(t, got, `cruz_migrations_total{node="n1",result="failed"} 1`)
	assert.Contains(t, got, `cruz_restores_total{kind="restart",node="n1",result="failed"} 1`)
	assert.Contains(t, got, `cruz_restore_duration_seconds_count{kind="rollback",node="n1"} 1`)
	assert.NotContains(t, got, `cruz_restore_duration_seconds_count{kind="restart"`, "a failed restore has no duration")

	// Many jobs that come and go leave no series behind.
	for i := 0; i < 1000; i++ {
		id := "x" + strings.Repeat("y", i%7) + string(rune('a'+i%26))
		m.JobActive(id, "carol", 1)
		m.CheckpointCommitted(id, ckpt(1, 1, 1, 1, 1))
		m.JobEnded(id)
	}
	n, err := testutil.GatherAndCount(m.Registry(), "cruz_job_pods", "cruz_job_checkpoints_total", "cruz_job_last_checkpoint_bytes")
	require.NoError(t, err)
	assert.Equal(t, 1+2, n, "only j2's series are left")
}

func TestScrapeSources(t *testing.T) {
	calls := 0
	m := New(Options{Node: "n1", StoreEvery: time.Hour, Source: Source{
		Pods:      func() int { return 5 },
		JobStates: func() map[string]int { return map[string]int{"running": 2, "exited": 1} },
		Store:     func() (int64, int64, error) { calls++; return 1234, 5678, nil },
	}})
	got := scrape(t, m)
	assert.Contains(t, got, `cruz_node_pods{node="n1"} 5`)
	assert.Contains(t, got, `cruz_jobs{node="n1",state="running"} 2`)
	assert.Contains(t, got, `cruz_jobs{node="n1",state="exited"} 1`)
	assert.Contains(t, got, `cruz_store_bytes{node="n1"} 1234`)
	assert.Contains(t, got, `cruz_store_free_bytes{node="n1"} 5678`)
	assert.Contains(t, got, `cruz_store_measure_errors{node="n1"} 0`)
	scrape(t, m)
	assert.Equal(t, 1, calls, "the store is measured once per StoreEvery, not at every scrape")
	m.CheckpointCommitted("j1", ckpt(1, 1, 1, 1, 1))
	scrape(t, m)
	scrape(t, m)
	assert.Equal(t, 2, calls, "but again after a checkpoint of this agent")

	bad := New(Options{Node: "n1", Source: Source{Store: func() (int64, int64, error) { return 0, 0, errors.New("EIO") }}})
	got = scrape(t, bad)
	assert.Contains(t, got, `cruz_store_measure_errors{node="n1"} 1`)
	assert.NotContains(t, got, "cruz_store_bytes{", "no made-up size when the store cannot be measured")
}

func TestLint(t *testing.T) {
	m := newTest(t, Source{Pods: func() int { return 0 }})
	m.JobActive("j1", "alice", 1)
	problems, err := testutil.GatherAndLint(m.Registry())
	require.NoError(t, err)
	assert.Empty(t, problems)
}

// scrape reads the metrics through the HTTP handler, as Prometheus does.
func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}
