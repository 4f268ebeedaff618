package agent

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/joblog"
	"github.com/cruz-hpc/cruz/internal/slurm"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestOutputFrames: the output a requeued Slurm step sends first is its
// earlier runs' stdout and stderr, without the frames that ended runs.
func TestOutputFrames(t *testing.T) {
	path := filepath.Join(t.TempDir(), "output")
	log, err := joblog.Open(path, 0)
	require.NoError(t, err)
	defer log.Close()
	out := func(s string) { log.Append(api.Frame{Stream: "stdout", Data: []byte(s)}) }

	out("start\n")
	out("1\n")
	mid := log.Offset()
	log.Append(api.Frame{Stream: "stderr", Data: []byte("warning\n")})
	out("2\n")
	log.Append(api.Frame{Error: "ended by Slurm"})
	out("3\n")
	end := log.Offset()

	text := func(path string, to int64) (s string) {
		require.NoError(t, joblog.EachOutputFrame(path, to, func(f api.Frame) error {
			s += f.Stream + ":" + string(f.Data)
			return nil
		}))
		return s
	}
	assert.Equal(t, "stdout:start\nstdout:1\n", text(path, mid))
	assert.Equal(t, "stdout:start\nstdout:1\nstderr:warning\nstdout:2\nstdout:3\n", text(path, end))
	assert.Empty(t, text(path, 0))
	assert.Empty(t, text(filepath.Join(t.TempDir(), "none"), end), "no log: nothing")
}

func TestSlurmJobIDs(t *testing.T) {
	assert.Equal(t, "slurm-42-0", slurmJobID(42, 0))
	assert.Equal(t, "slurm-42-", slurmJobPrefix(42))
	a := &Agent{jobs: map[string]*job{}}
	mk := func(id string, uid uint32, state api.JobState, age int) {
		j := &job{rec: jobRecord{ID: id, UID: uid, State: state}}
		j.rec.Created = j.rec.Created.AddDate(0, 0, age)
		a.jobs[id] = j
	}
	mk("slurm-7-0", 1001, api.StateExited, 1)
	mk("slurm-7-1", 1001, api.StateRunning, 0)
	mk("slurm-7-2", 1001, api.StateExited, 2)
	mk("slurm-8-0", 1002, api.StateRunning, 0)
	find := func(uid uint32, ref string) string {
		j, ok := a.lookupSlurmLocked(caller{UID: uid}, ref)
		if !ok {
			return ""
		}
		return j.id()
	}
	assert.Equal(t, "slurm-7-1", find(1001, "7"), "the step that runs")
	assert.Equal(t, "slurm-7-2", find(1001, "7.2"))
	assert.Equal(t, "", find(1001, "8"), "another user's job")
	assert.Equal(t, "slurm-8-0", find(0, "8"), "root sees every job")
	assert.Equal(t, "", find(1001, "x"))
	assert.Equal(t, "", find(1001, "0"))
	delete(a.jobs, "slurm-7-1")
	assert.Equal(t, "slurm-7-2", find(1001, "7"), "none runs: the newest")
}

// TestOutputAppended: a requeued step's output file holds its earlier
// output already (Slurm appended) when it is at least as long as the
// step's earlier stdout; truncated, or of unknown size, the output is
// replayed.
func TestOutputAppended(t *testing.T) {
	a, fc := newTestAgent(t, "n1")
	j := addJob(t, a, fc, "slurm-7-0", map[string]string{"mpiexec": "n1", "r0": "n1"})
	j.out.Append(api.Frame{Stream: "stdout", Data: []byte("iter 1\n")})    // 7 bytes
	j.out.Append(api.Frame{Stream: "stderr", Data: []byte("a warning\n")}) // not in the stdout file
	j.out.Append(api.Frame{Stream: "stdout", Data: []byte("iter 2\n")})    // 14 bytes of stdout
	j.out.Append(api.Frame{Error: "cancelled by Slurm"})
	end := j.out.Offset()
	size := func(n int64) *int64 { return &n }
	for _, tc := range []struct {
		name      string
		fileBytes *int64
		to        int64
		want      bool
	}{
		{"unknown size", nil, end, false},
		{"truncated, empty", size(0), end, false},
		{"truncated, the batch script's first lines", size(13), end, false},
		{"appended: exactly the earlier stdout", size(14), end, true},
		{"appended: and the batch script's lines", size(300), end, true},
		{"nothing earlier to replay", size(300), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, stdout := a.outputAppended(j, tc.to, tc.fileBytes)
			assert.Equal(t, tc.want, got)
			if tc.fileBytes != nil && tc.to == end {
				assert.Equal(t, int64(14), stdout)
			}
		})
	}
}

// TestCheckSlurmStep: a Slurm step's owner, nodes and task count must be
// those slurmctld gives it, whatever the task's environment said.
func TestCheckSlurmStep(t *testing.T) {
	a, _ := newTestAgent(t, "n1", "n2", "n3")
	slurmctld := slurm.Step{ID: "7.0", UID: 1001, Nodes: []string{"n1", "n2"}, Tasks: 3}
	a.showStep = func(_ context.Context, id string) (slurm.Step, error) {
		if id != "7.0" {
			return slurm.Step{}, errors.New("slurmctld knows no step " + id)
		}
		return slurmctld, nil
	}
	req := func(nodes ...string) api.RunRequest {
		return api.RunRequest{NP: len(nodes), Slurm: &api.SlurmStep{JobID: 7, StepID: 0, RankNodes: nodes}}
	}
	user := caller{UID: 1001, GID: 1001}
	require.NoError(t, a.checkSlurmStep(context.Background(), user, req("n1", "n1", "n2")))
	// Slurm's record has no per-node counts: another spread over the same nodes passes.
	require.NoError(t, a.checkSlurmStep(context.Background(), user, req("n1", "n2", "n2")))
	require.NoError(t, a.checkSlurmStep(context.Background(), user, api.RunRequest{}), "no Slurm step: nothing to check")

	for _, tc := range []struct {
		c    caller
		req  api.RunRequest
		want string
	}{
		{user, req("n1", "n2", "n3"), "refused to run Slurm step 7.0 for uid 1001: its tasks' environment places them on nodes n1,n2,n3, but Slurm (scontrol show step 7.0) runs the step on n1,n2"},
		{user, req("n1", "n1", "n1"), "places them on nodes n1, but Slurm"},
		{user, req("n1", "n2"), "the request has 2 tasks, but Slurm's step has 3"},
		{caller{UID: 1002, GID: 1002}, req("n1", "n1", "n2"), "refused to run Slurm step 7.0 for uid 1002: Slurm says the step belongs to uid 1001"},
		{caller{UID: 0}, req("n1", "n1", "n2"), "Slurm says the step belongs to uid 1001"},
		{user, api.RunRequest{NP: 1, Slurm: &api.SlurmStep{JobID: 8, RankNodes: []string{"n1"}}}, "cannot ask slurmctld about the step (slurmctld knows no step 8.0)"},
	} {
		err := a.checkSlurmStep(context.Background(), tc.c, tc.req)
		require.Error(t, err, tc.want)
		assert.ErrorIs(t, err, api.ErrForbidden)
		assert.Contains(t, err.Error(), tc.want)
	}
}
