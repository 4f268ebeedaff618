package launcher

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestExpandHostlist(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{in: "node1", want: []string{"node1"}},
		{in: "node[1-3]", want: []string{"node1", "node2", "node3"}},
		{in: "node[1-2,5],login1", want: []string{"node1", "node2", "node5", "login1"}},
		{in: "n[08-10]", want: []string{"n08", "n09", "n10"}},
		{in: "rack[1-2]-n[1-2]", want: []string{"rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"}},
		{in: "a,b[3],c", want: []string{"a", "b3", "c"}},
		{in: "", err: "empty host list"},
		{in: "node[1-3", err: "unbalanced ["},
		{in: "node1-3]", err: "unbalanced ]"},
		{in: "node[3-1]", err: `bad range "3-1"`},
		{in: "node[x]", err: `bad range "x"`},
		{in: "a,,b", err: "empty host name"},
	} {
		got, err := ExpandHostlist(tc.in)
		if tc.err != "" {
			require.Error(t, err, tc.in)
			assert.Contains(t, err.Error(), tc.err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, got, tc.in)
	}
}

func TestParseTasksPerNode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
		ok   bool
	}{
		{"4", []int{4}, true},
		{"2,1", []int{2, 1}, true},
		{"2(x3),1", []int{2, 2, 2, 1}, true},
		{"1(x2)", []int{1, 1}, true},
		{"", nil, false},
		{"2(x0)", nil, false},
		{"a", nil, false},
		{"-1", nil, false},
	} {
		got, err := ParseTasksPerNode(tc.in)
		if !tc.ok {
			assert.Error(t, err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, got, tc.in)
	}
}

func TestReadSlurmStep(t *testing.T) {
	base := map[string]string{
		"SLURM_JOB_ID": "42", "SLURM_STEP_ID": "1", "SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "5",
		"SLURM_STEP_NODELIST": "node[1-2],node4", "SLURM_STEP_TASKS_PER_NODE": "2(x2),1",
		"SLURM_RESTART_COUNT": "3", "CRUZ_INTERVAL": "30s", "CRUZ_RESTART": "auto",
	}
	env := func(over map[string]string) func(string) string {
		return func(k string) string {
			if v, ok := over[k]; ok {
				return v
			}
			return base[k]
		}
	}
	s, err := readSlurmStep(env(nil))
	require.NoError(t, err)
	assert.Equal(t, uint32(42), s.jobID)
	assert.Equal(t, uint32(1), s.stepID)
	assert.Equal(t, 3, s.restarts)
	assert.Equal(t, []string{"node1", "node1", "node2", "node2", "node4"}, s.rankNodes)
	assert.Equal(t, "slurm-42-1", s.jobRef())
	assert.Equal(t, "42.1", s.name())
	assert.Equal(t, "30s", s.interval)
	assert.Equal(t, "auto", s.restart)

	s, err = readSlurmStep(env(map[string]string{"SLURM_RESTART_COUNT": ""}))
	require.NoError(t, err)
	assert.Equal(t, 0, s.restarts, "never requeued: no SLURM_RESTART_COUNT")

	for _, tc := range []struct {
		over map[string]string
		err  string
	}{
		{map[string]string{"SLURM_JOB_ID": ""}, "SLURM_JOB_ID is not set: cruz runs this way only as a task of srun --cruz"},
		{map[string]string{"SLURM_PROCID": "x"}, `SLURM_PROCID="x" is not a number`},
		{map[string]string{"SLURM_STEP_TASKS_PER_NODE": "2,1"}, "gives 2 counts for 3 nodes"},
		{map[string]string{"SLURM_STEP_NUM_TASKS": "4"}, "places 5 tasks, SLURM_STEP_NUM_TASKS says 4"},
		{map[string]string{"SLURM_STEP_NODELIST": "node[1-"}, "SLURM_STEP_NODELIST"},
	} {
		_, err := readSlurmStep(env(tc.over))
		require.Error(t, err, "%v", tc.over)
		assert.Contains(t, err.Error(), tc.err)
	}
}
