package node

import (
	"strconv"
	"strings"
	"time"

	"github.com/cruz-hpc/cruz/internal/cgroups"
)

// stepCgroupWait bounds the wait for a step's cgroups to appear on this
// node. Only a node where Slurm makes cgroups waits, and only for a step it
// has not set up yet.
const stepCgroupWait = 10 * time.Second

// stepCgroups are the cgroups of the Slurm step that job (slurm-JOB-STEP)
// is, on this node, for the step's owner uid: where its pods go, so that
// the step's CPU and memory limits hold for them. None for a job that is no
// Slurm step, or a step Slurm made no cgroups for (no task/cgroup).
func (n *Node) stepCgroups(job string, uid uint32) map[string]string {
	if len(n.cfg.SlurmCgroups) == 0 {
		return nil
	}
	jobID, stepID, ok := parseSlurmJob(job)
	if !ok {
		return nil
	}
	// The step's first task asks for every node's pods as soon as it
	// runs: the step's slurmstepd on another node may still be making its
	// cgroups there.
	deadline := time.Now().Add(stepCgroupWait)
	set, complete, err := cgroups.SlurmStep(n.cfg.SlurmCgroups, uid, jobID, stepID)
	for err == nil && !complete && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		set, complete, err = cgroups.SlurmStep(n.cfg.SlurmCgroups, uid, jobID, stepID)
	}
	if err != nil {
		n.log.Warn("the Slurm step's cgroups cannot be used: its pods run in the agent's", "job", job, "err", err)
		return nil
	}
	if len(set) == 0 {
		n.log.Info("the Slurm step has no cgroup on this node: its pods run in the agent's", "job", job,
			"slurm_cgroups", n.cfg.SlurmCgroups)
		return nil
	}
	return set
}

// parseSlurmJob splits a Slurm step's job id, slurm-JOB-STEP.
func parseSlurmJob(id string) (job, step uint32, ok bool) {
	rest, found := strings.CutPrefix(id, "slurm-")
	if !found {
		return 0, 0, false
	}
	j, s, found := strings.Cut(rest, "-")
	if !found {
		return 0, 0, false
	}
	jn, err1 := strconv.ParseUint(j, 10, 32)
	sn, err2 := strconv.ParseUint(s, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return uint32(jn), uint32(sn), true
}
