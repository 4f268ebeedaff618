package e2e

import (
	"fmt"
	"testing"

	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCheckpointRightAfterStart: a checkpoint asked for as soon as `cruz
// run --detach` returns, while the job's pods may still be starting (their
// first process not yet the user's command), waits for them and succeeds,
// instead of being refused for the starting process's root credentials.
// Five jobs, each an MPI job of 2 ranks (three pods) and checkpointed at
// once.
func TestCheckpointRightAfterStart(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	for i := 0; i < 5; i++ {
		name := fmt.Sprintf("early%d", i)
		r := a.cruz(u, dir, "run", "--detach", "--interval", "off", "--name", name, "--np", "2", "--",
			testenv.Bin(t, "mpi_allreduce"), "200", "50")
		require.Equal(t, 0, r.Code, "run --detach: %s", r.Stderr)
		r = a.cruz(u, dir, "checkpoint", name)
		assert.Equal(t, 0, r.Code, "checkpoint right after the start of %s: %s", name, r.Stderr)
		assert.NotContains(t, r.Stderr, "other credentials")
		r = a.cruz(u, dir, "rm", "--checkpoints", name)
		require.Equal(t, 0, r.Code, "rm: %s", r.Stderr)
	}
	a.requireNoLeaks()
}
