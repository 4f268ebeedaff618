package launcher

import (
	"bytes"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseStates(t *testing.T) {
	got, err := parseStates("running,Stopped")
	require.NoError(t, err)
	assert.Equal(t, []api.JobState{api.StateRunning, api.StateStopped}, got)
	_, err = parseStates("running,done")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `-t "running,done": "done" is not a job state; give one or more of starting, running, restoring, stopped, exited, failed, lost, cancelled`)
	_, err = parseStates("")
	require.Error(t, err)
}

func TestQueueTable(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	jobs := []api.QueueJob{
		{ID: "a1", User: "alice", State: api.StateRunning, Nodes: []string{"node1", "node2"}, Created: now.Add(-90 * time.Second), Name: "lmp", Argv: []string{"lmp", "-in", "in.lj"}},
		{ID: "b2", User: "bob", State: api.StateStopped, Nodes: []string{"node2"}, Created: now.Add(-26 * time.Hour)},
	}
	assert.Len(t, filterQueue(jobs, "bob", nil), 1)
	assert.Len(t, filterQueue(jobs, "", []api.JobState{api.StateRunning, api.StateStopped}), 2)
	assert.Empty(t, filterQueue(jobs, "alice", []api.JobState{api.StateStopped}))
	var b bytes.Buffer
	printQueue(&b, jobs, now)
	assert.Equal(t, "JOB  USER   STATE    NODES        AGE         NAME  COMMAND\n"+
		"a1   alice  running  node1,node2  1:30        lmp   lmp -in in.lj\n"+
		"b2   bob    stopped  node2        1-02:00:00  -     -\n", b.String())
	assert.Equal(t, "2:03:04", age(now, now.Add(-(2*time.Hour+3*time.Minute+4*time.Second))))
}
