package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStatusAll: on a 2-node virtual cluster, cruzt1 runs a job on node1
// and cruzt2 one on node2. `cruz status --all` on either node lists both,
// with owners, states, nodes and ages; each user sees the name and command
// of their own job only (root sees all); -u and -t filter, and bad values
// are refused with a usage error. A node that dies is named, and does not
// hold up the answer.
func TestStatusAll(t *testing.T) {
	c := upCluster(t, 2)
	st := c.status()
	n1, n2 := c.node(t, st, "node1"), c.node(t, st, "node2")
	u1 := testenv.LookupUser(t, "cruzt1")
	u2 := testenv.LookupUser(t, "cruzt2")
	dir1, dir2 := testenv.TempDirFor(t, u1), testenv.TempDirFor(t, u2)

	// cruzt1's command and name are what cruzt2 must not see ("7777s" and
	// "hidden-name" cannot occur in a job id, which is hex).
	r := n1.cruz(u1, dir1, "run", "--detach", "--plain", "--interval", "off", "--name", "hidden-name", "--", "sleep", "7777s")
	require.Equal(t, 0, r.Code, "cruzt1's run: %s", r.Stderr)
	id1 := strings.TrimSpace(r.Stdout)
	r = n2.cruz(u2, dir2, "run", "--detach", "--plain", "--interval", "off", "--name", "own", "--", "sleep", "600")
	require.Equal(t, 0, r.Code, "cruzt2's run: %s", r.Stderr)
	id2 := strings.TrimSpace(r.Stdout)

	queue := func(a *agent, u testenv.User, args ...string) api.Queue {
		t.Helper()
		r := a.cruz(u, "", append([]string{"status", "--all", "--json"}, args...)...)
		require.Equal(t, 0, r.Code, "cruz status --all --json %v: %s", args, r.Stderr)
		var q api.Queue
		require.NoError(t, json.Unmarshal([]byte(r.Stdout), &q), r.Stdout)
		return q
	}
	byID := func(q api.Queue) map[string]api.QueueJob {
		out := map[string]api.QueueJob{}
		for _, j := range q.Jobs {
			out[j.ID] = j
		}
		return out
	}

	// cruzt2, asking node1 (which coordinates cruzt1's job, not its own).
	q := byID(queue(n1, u2))
	require.Contains(t, q, id1)
	require.Contains(t, q, id2)
	assert.Equal(t, "cruzt1", q[id1].User)
	assert.Equal(t, api.StateRunning, q[id1].State)
	assert.Equal(t, []string{"node1"}, q[id1].Nodes)
	assert.Empty(t, q[id1].Name, "cruzt2 does not see cruzt1's job name")
	assert.Empty(t, q[id1].Argv, "nor its command")
	assert.Equal(t, "cruzt2", q[id2].User)
	assert.Equal(t, []string{"node2"}, q[id2].Nodes)
	assert.Equal(t, "own", q[id2].Name)
	assert.Equal(t, []string{"sleep", "600"}, q[id2].Argv, "cruzt2 sees its own command, coordinated by node2")

	r = n1.cruz(u2, "", "status", "--all")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Empty(t, r.Stderr)
	assert.NotContains(t, r.Stdout, "7777s")
	assert.NotContains(t, r.Stdout, "hidden-name")
	lines := check.NonEmptyLines(r.Stdout)
	require.Len(t, lines, 3, r.Stdout)
	assert.Regexp(t, `^JOB +USER +STATE +NODES +AGE +NAME +COMMAND$`, lines[0])
	assert.Regexp(t, `^`+id1+` +cruzt1 +running +node1 +\d+:\d\d +- +-$`, lines[1], "oldest first")
	assert.Regexp(t, `^`+id2+` +cruzt2 +running +node2 +\d+:\d\d +own +sleep 600$`, lines[2])

	// cruzt1, asking node2, sees its own command (node1 answers for it).
	q = byID(queue(n2, u1))
	assert.Equal(t, []string{"sleep", "7777s"}, q[id1].Argv)
	assert.Empty(t, q[id2].Argv)
	// Root sees everything.
	r = n2.cruzAsRoot("status", "--all", "--json")
	require.Equal(t, 0, r.Code, r.Stderr)
	var rq api.Queue
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &rq), r.Stdout)
	q = byID(rq)
	assert.Equal(t, []string{"sleep", "7777s"}, q[id1].Argv)
	assert.Equal(t, []string{"sleep", "600"}, q[id2].Argv)

	// Filters.
	only := queue(n1, u2, "-u", "cruzt1")
	require.Len(t, only.Jobs, 1)
	assert.Equal(t, id1, only.Jobs[0].ID)
	assert.Empty(t, queue(n1, u2, "-t", "stopped,failed").Jobs)
	assert.Len(t, queue(n1, u2, "-t", "RUNNING").Jobs, 2)
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"status", "-t", "done"}, `-t "done": "done" is not a job state`},
		{[]string{"status", "-u", "cruz-no-such-user"}, `-u "cruz-no-such-user": no such user`},
		{[]string{"status", "--all", id1}, "give no JOB with --all"},
	} {
		r = n1.cruz(u2, "", bad.args...)
		assert.Equal(t, 2, r.Code, "cruz %v is a usage error", bad.args)
		assert.Contains(t, r.Stderr, bad.want)
	}

	// node2 dies: node1 names it, answers within the peers' timeout, and
	// still lists its own jobs.
	r = c.clusterCmd("fail", "node2")
	require.Equal(t, 0, r.Code, "cruz cluster fail node2: %s", r.Stderr)
	t0 := time.Now()
	r = n1.cruz(u2, "", "status", "--all")
	took := time.Since(t0)
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Less(t, took, 10*time.Second, "a dead node is not waited for")
	assert.Contains(t, r.Stderr, "cruz: node node2 did not answer; its jobs are not listed")
	assert.Contains(t, r.Stdout, id1)
	assert.NotContains(t, r.Stdout, id2)
	t.Logf("status --all with node2 dead: %s", took.Round(time.Millisecond))

	require.Equal(t, 0, n1.cruz(u1, "", "rm", id1).Code)
}
