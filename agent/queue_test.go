package agent

import (
	"context"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestQueueShowsOthersJobsWithoutTheirCommands: every user sees every job's
// id, owner, state, nodes and times; the name and command only of their own
// (all for root), unless status.show_commands is "everyone".
func TestQueueShowsOthersJobsWithoutTheirCommands(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2")
	j := addJob(t, a, fc, "job1", twoNodes) // the test's own uid, user "tester"
	j.rec.Request.Argv = []string{"app", "--secret-input", "/home/tester/private.dat"}

	other := caller{UID: j.rec.UID + 4242, GID: 4242, User: "mallory"}
	got := a.queueLocal(other)
	require.Len(t, got, 1)
	q := got[0]
	assert.Equal(t, "job1", q.ID)
	assert.Equal(t, "tester", q.User)
	assert.Equal(t, api.StateRunning, q.State)
	assert.Equal(t, []string{"n1", "n2"}, q.Nodes)
	assert.Equal(t, "n1", q.Coordinator)
	assert.Empty(t, q.Name, "another user does not see the job's name")
	assert.Empty(t, q.Argv, "nor its command line")

	for _, c := range []caller{rootCaller, {UID: j.rec.UID, GID: j.rec.GID, User: "tester"}} {
		q = a.queueLocal(c)[0]
		assert.Equal(t, "job1", q.Name, "uid %d", c.UID)
		assert.Equal(t, j.rec.Request.Argv, q.Argv, "uid %d sees the command", c.UID)
	}

	a.cfg.Status.ShowCommands = config.ShowCommandsEveryone
	q = a.queueLocal(other)[0]
	assert.Equal(t, j.rec.Request.Argv, q.Argv, "the admin allows everyone to see commands")
}

// TestQueueAsksEveryPeerAndNamesTheDeadOnes: the cluster's jobs come from
// every node; a node that is down is named, and does not hold up the answer.
func TestQueueAsksEveryPeerAndNamesTheDeadOnes(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2", "n3")
	j := addJob(t, a, fc, "job1", map[string]string{"mpiexec": "n1", "r0": "n1"})
	j.rec.Created = time.Now()
	older := time.Now().Add(-time.Hour)
	fc.set(func() {
		fc.node("n2").queue = []api.QueueJob{{ID: "job2", User: "bob", State: api.StateStopped, Nodes: []string{"n2"}, Coordinator: "n2", Created: older}}
		fc.node("n3").down = true
	})
	q := a.queue(context.Background(), caller{UID: 4242, User: "mallory"})
	require.Len(t, q.Jobs, 2)
	assert.Equal(t, "job2", q.Jobs[0].ID, "oldest first")
	assert.Equal(t, "job1", q.Jobs[1].ID)
	require.Len(t, q.Unreachable, 1)
	assert.Equal(t, "n3", q.Unreachable[0].Node)
	assert.NotEmpty(t, q.Unreachable[0].Error)
}
