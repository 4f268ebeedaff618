package agent

import (
	"context"
	"net/netip"
	"testing"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/stretchr/testify/require"
)

// TestRemovedJobsCheckpointKeepsItsAddresses: after `cruz rm` (checkpoints
// kept) the job's addresses stay reserved by its checkpoint in the shared
// store, so a new job does not get them and the removed job can still be
// restarted, on any node, with its own; deleting the checkpoints frees them.
func TestRemovedJobsCheckpointKeepsItsAddresses(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2")
	j := addJob(t, a, fc, "job1", twoNodes)
	_, err := a.checkpointLocked(context.Background(), j, false)
	require.NoError(t, err)
	var held []netip.Addr
	for _, p := range j.rec.Pods {
		held = append(held, p.Addr.Addr())
	}
	for _, p := range j.rec.Pods {
		fc.node(p.Node).hold(p.Name, false) // the pods end
	}
	require.NoError(t, a.Remove(rootCaller, "job1", false))

	used := a.usedAddrs("")
	for _, ip := range held {
		require.Equal(t, "job1", used[ip], "address %s of the removed job's checkpoint", ip)
	}
	require.Empty(t, a.usedAddrs("job1"), "the job itself may take its addresses back")

	a.subnet = netip.MustParsePrefix("10.203.0.0/16")
	a.pool = netip.MustParsePrefix("10.203.0.8/29") // .9 to .14; the checkpoint holds .11 to .14
	got, err := a.allocAddrs(2)
	require.NoError(t, err)
	require.Equal(t, []netip.Prefix{netip.MustParsePrefix("10.203.0.9/16"), netip.MustParsePrefix("10.203.0.10/16")}, got,
		"a new job gets none of the checkpoint's addresses")
	_, err = a.allocAddrs(3)
	require.ErrorContains(t, err, "fewer than 3 free addresses")

	require.NoError(t, a.store.DeleteJob("job1", j.storeOwner()))
	require.Empty(t, a.usedAddrs(""), "without checkpoints the addresses are free")
}

// TestSlurmOnlyRefusesCruzRun: with agent.slurm_only a user's cruz run is
// refused, saying what to use instead, and nothing is made.
func TestSlurmOnlyRefusesCruzRun(t *testing.T) {
	a, _ := newTestAgent(t, "n1")
	a.cfg.Agent.SlurmOnly = true
	user := caller{UID: 1001, GID: 1001, User: "cruzt1"}
	_, err := a.Run(context.Background(), user, api.RunRequest{NP: 1, Argv: []string{"/bin/true"}, Dir: "/", Plain: true})
	require.ErrorIs(t, err, api.ErrForbidden)
	require.EqualError(t, err, "this cluster runs jobs only under Slurm (agent.slurm_only on node n1): run it with srun --cruz or sbatch, not cruz run")
	require.Empty(t, a.jobList(), "no job made")
}
