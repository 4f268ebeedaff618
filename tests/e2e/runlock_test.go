package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/cluster"
	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSecondAgentRefused: an admin starts a second cruzd with a running
// node's configuration, in the node's namespaces. It refuses at once,
// naming the running agent's PID, exits 1 and changes nothing: the first
// agent serves on, and its running job keeps printing, can be checkpointed
// and ends with all of its output.
func TestSecondAgentRefused(t *testing.T) {
	c, st, n1, u, dir := clusterSetup(t, 1)
	node := st.Nodes[0]
	const lines = 250
	run := n1.startCruz(u, dir, "run", "--plain", "--name", "cnt", "--", testenv.Bin(t, "counter"), fmt.Sprint(lines), "20")
	run.waitOutput(t, "line 3\n", 30*time.Second)
	before := awaitRunning(t, n1, u, "cnt")
	require.Len(t, before.Pods, 1)
	lock := filepath.Join(node.RunDir, "cruzd.lock")
	lockBefore, err := os.ReadFile(lock)
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("%d\n", node.PID), string(lockBefore), "the running agent wrote its PID into the lock file")

	cmd := exec.Command("nsenter", fmt.Sprintf("--net=/proc/%d/ns/net", node.HolderPID), fmt.Sprintf("--uts=/proc/%d/ns/uts", node.HolderPID),
		"--", testenv.Bin(t, "cruzd"), "--config", node.Config)
	cmd.Env = append(os.Environ(), "PATH="+c.path)
	start := time.Now()
	r := runCommand(t, cmd, 30*time.Second)
	took := time.Since(start)
	t.Logf("the second cruzd refused in %s", took)
	assert.Equal(t, 1, r.Code, "the second cruzd exits 1; stdout:\n%s", r.Stdout)
	assert.Equal(t, fmt.Sprintf("cruzd: run directory %s is in use by cruzd pid %d: stop that agent first, or give this one its own agent.run_dir and agent.socket\n",
		node.RunDir, node.PID), r.Stderr)
	assert.Empty(t, r.Stdout)
	assert.Less(t, took, 5*time.Second, "it refuses at once")

	// Its one line of stderr is all it did (it logs to stderr, and would have
	// logged any clean-up). Nothing changed: the lock, the agent, its job.
	lockAfter, err := os.ReadFile(lock)
	require.NoError(t, err)
	assert.Equal(t, string(lockBefore), string(lockAfter))
	assert.True(t, cluster.Alive(node.PID), "the first agent runs on")
	v := n1.cruz(u, "", "version")
	require.Equal(t, 0, v.Code, "the first agent still answers: %s", v.Stderr)
	after := n1.status(u, "cnt")
	assert.Equal(t, api.StateRunning, after.State)
	assert.Equal(t, before.Pods[0].PID, after.Pods[0].PID, "the job's pod is the same process")
	seen := strings.Count(run.stdout.String(), "\n")
	run.waitOutput(t, fmt.Sprintf("line %d\n", seen+2), 10*time.Second)
	ck := n1.checkpoint(u, "cnt")
	t.Logf("checkpointed the job after the refusal: %s", ck)
	res := run.wait(t, time.Minute)
	require.Equal(t, 0, res.Code, "the job ends normally; stderr:\n%s", res.Stderr)
	assert.Equal(t, check.CounterLines(1, lines), check.Lines(res.Stdout), "the job printed every line once")
}
