package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestEventsAndHistoryOutliveRm (issue 15.5): cruz events -f follows a job
// (it sees checkpoints taken after it started, and ends with the job,
// exit status 0); after a plain cruz rm, cruz events and cruz history still
// show the job's events and checkpoints from the store, to its user only
// (cruzt2 is refused, naming both users); cruz rm --checkpoints removes
// them with the checkpoints.
func TestEventsAndHistoryOutliveRm(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	u2 := testenv.LookupUser(t, "cruzt2")
	dir := testenv.TempDirFor(t, u)

	r := a.cruz(u, dir, "run", "--detach", "--plain", "--interval", "off", "--name", "evs", "--", testenv.Bin(t, "counter"), "100000", "100")
	require.Equal(t, 0, r.Code, "cruz run --detach: %s", r.Stderr)
	id := strings.TrimSpace(r.Stdout)
	awaitJobState(a, u, id, time.Minute, api.StateRunning)
	awaitCommand(t, a, u, id, "counter")

	f := a.startCruz(u, "", "events", "-f", id)
	f.waitOutput(t, "started", 30*time.Second)
	ck1 := a.checkpoint(u, id)
	ck2 := a.checkpoint(u, id)
	f.waitOutput(t, ck2, 30*time.Second)
	r = a.cruz(u, "", "signal", id, "TERM")
	require.Equal(t, 0, r.Code, "cruz signal: %s", r.Stderr)
	t0 := time.Now()
	fr := f.wait(t, 30*time.Second)
	t.Logf("cruz events -f ended %s after the signal", time.Since(t0).Round(time.Millisecond))
	require.Equal(t, 0, fr.Code, "cruz events -f: %s", fr.Stderr)
	for _, want := range []string{"started", ck1, ck2, "exited"} {
		assert.Contains(t, fr.Stdout, want)
	}
	assert.Equal(t, 1, strings.Count(fr.Stdout, ck2+" by uid"), "each event once:\n%s", fr.Stdout)

	r = a.cruz(u, "", "rm", id)
	require.Equal(t, 0, r.Code, "cruz rm: %s", r.Stderr)
	r = a.cruz(u, "", "status", id)
	require.NotEqual(t, 0, r.Code, "the agent no longer knows the job")

	r = a.cruz(u, "", "events", id)
	require.Equal(t, 0, r.Code, "cruz events after rm: %s", r.Stderr)
	assert.Contains(t, r.Stderr, "no agent knows job "+id+": its events as the store kept them")
	for _, want := range []string{"started", ck1, ck2, "exited"} {
		assert.Contains(t, r.Stdout, want)
	}
	r = a.cruz(u, "", "events", "--json", id)
	require.Equal(t, 0, r.Code, r.Stderr)
	var l api.EventList
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &l), r.Stdout)
	assert.True(t, l.FromStore)
	assert.Equal(t, []string{"started", "checkpoint", "checkpoint", "exited"}, kinds(l.Events))
	r = a.cruz(u, "", "events", "-f", id)
	require.Equal(t, 0, r.Code, "events -f of a removed job prints and ends: %s", r.Stderr)
	assert.Contains(t, r.Stdout, "exited")

	r = a.cruz(u, "", "history", id)
	require.Equal(t, 0, r.Code, "cruz history after rm: %s", r.Stderr)
	t.Logf("cruz history:\n%s", r.Stdout)
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	require.Len(t, lines, 3, r.Stdout)
	assert.Contains(t, lines[0], "HELD")
	assert.Regexp(t, `^`+ck1+`\s.*\s\d+ms\s.*kept$`, lines[1])
	assert.Regexp(t, `^`+ck2+`\s.*kept$`, lines[2])

	// The events log in the store is root's: cruzt1 reads it only through
	// the agent, and cruzt2 not at all.
	fi, err := os.Stat(filepath.Join(a.store, id, "events.jsonl"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	assert.Equal(t, uint32(0), fi.Sys().(*syscall.Stat_t).Uid)
	const refused = "belong to cruzt1 (uid 1001), not cruzt2 (uid 1002)"
	for _, cmd := range []string{"events", "history"} {
		r = a.cruz(u2, "", cmd, id)
		assert.Equal(t, 1, r.Code, "cruzt2's cruz %s", cmd)
		assert.Contains(t, r.Stderr, refused, "cruzt2's cruz %s", cmd)
		assert.NotContains(t, r.Stdout, "started")
	}

	// rm --checkpoints takes the events with the checkpoints.
	r = a.cruz(u, dir, "run", "--detach", "--plain", "--interval", "off", "--", "sleep", "600")
	require.Equal(t, 0, r.Code, "cruz run --detach: %s", r.Stderr)
	id2 := strings.TrimSpace(r.Stdout)
	awaitJobState(a, u, id2, time.Minute, api.StateRunning)
	require.FileExists(t, filepath.Join(a.store, id2, "events.jsonl"))
	r = a.cruz(u, "", "rm", "--checkpoints", id2)
	require.Equal(t, 0, r.Code, "cruz rm --checkpoints: %s", r.Stderr)
	assert.NoDirExists(t, filepath.Join(a.store, id2))
	r = a.cruz(u, "", "events", id2)
	assert.Equal(t, 1, r.Code)
	assert.Contains(t, r.Stderr, "does not exist")
	a.requireNoLeaks()
}

// TestEventsFromStoreOnOtherNode (issue 15.5): on a 2-node virtual cluster
// with a shared store, cruz events -f on node2 follows a job that node1
// coordinates (a checkpoint taken after it started shows) and ends when the
// job is removed; then node2, which never knew the job, shows its events
// and history from the store; so it does for a job whose coordinator's
// node died (cruz cluster fail node1).
func TestEventsFromStoreOnOtherNode(t *testing.T) {
	c := upCluster(t, 2)
	st := c.status()
	n1, n2 := c.node(t, st, "node1"), c.node(t, st, "node2")
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)

	r := n1.cruz(u, dir, "run", "--detach", "--plain", "--interval", "off", "--", "sleep", "600")
	require.Equal(t, 0, r.Code, "cruz run --detach: %s", r.Stderr)
	id := strings.TrimSpace(r.Stdout)
	awaitJobState(n1, u, id, time.Minute, api.StateRunning)
	awaitCommand(t, n1, u, id, "sleep")

	f := n2.startCruz(u, "", "events", "-f", id)
	f.waitOutput(t, "started", 30*time.Second)
	ck := n1.checkpoint(u, id)
	f.waitOutput(t, ck, 30*time.Second)
	r = n1.cruz(u, "", "rm", id)
	require.Equal(t, 0, r.Code, "cruz rm: %s", r.Stderr)
	fr := f.wait(t, 30*time.Second)
	require.Equal(t, 0, fr.Code, "cruz events -f on node2: %s", fr.Stderr)

	r = n2.cruz(u, "", "events", id)
	require.Equal(t, 0, r.Code, "cruz events on node2 after rm: %s", r.Stderr)
	assert.Contains(t, r.Stderr, "its events as the store kept them")
	assert.Contains(t, r.Stdout, "started")
	assert.Contains(t, r.Stdout, ck)
	r = n2.cruz(u, "", "history", id)
	require.Equal(t, 0, r.Code, "cruz history on node2 after rm: %s", r.Stderr)
	assert.Regexp(t, `(?m)^`+ck+`\s.*kept$`, r.Stdout)

	// The coordinator's node dies with a job on it: node2 shows the job's
	// events and checkpoints from the store.
	r = n1.cruz(u, dir, "run", "--detach", "--plain", "--interval", "off", "--", "sleep", "600")
	require.Equal(t, 0, r.Code, "cruz run --detach: %s", r.Stderr)
	id2 := strings.TrimSpace(r.Stdout)
	awaitJobState(n1, u, id2, time.Minute, api.StateRunning)
	awaitCommand(t, n1, u, id2, "sleep")
	ck2 := n1.checkpoint(u, id2)
	r = c.clusterCmd("fail", "node1")
	require.Equal(t, 0, r.Code, "cruz cluster fail node1: %s", r.Stderr)
	t0 := time.Now()
	r = n2.cruz(u, "", "events", id2)
	t.Logf("cruz events on node2 with node1 dead: %s", time.Since(t0).Round(time.Millisecond))
	require.Equal(t, 0, r.Code, "cruz events on node2, node1 dead: %s", r.Stderr)
	assert.Contains(t, r.Stderr, "its events as the store kept them")
	assert.Contains(t, r.Stdout, "started")
	assert.Contains(t, r.Stdout, ck2)
	r = n2.cruz(u, "", "history", id2)
	require.Equal(t, 0, r.Code, "cruz history on node2, node1 dead: %s", r.Stderr)
	assert.Regexp(t, `(?m)^`+ck2+`\s.*kept$`, r.Stdout)
}

// awaitCommand waits until the job's (first) pod runs comm: a checkpoint
// taken before the pod's init has exec'd the job's command is refused (the
// init still has the agent's credentials).
func awaitCommand(t *testing.T, a *agent, u testenv.User, job, comm string) {
	t.Helper()
	j := a.status(u, job)
	require.NotEmpty(t, j.Pods)
	require.Eventually(t, func() bool {
		for _, pid := range append([]int{j.Pods[0].PID}, descendants(j.Pods[0].PID)...) {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); string(b) == comm+"\n" {
				return true
			}
		}
		return false
	}, 30*time.Second, 20*time.Millisecond, "job %s's pod runs %s", job, comm)
}
