package slurm

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseStep(t *testing.T) {
	// scontrol show step -o of Slurm 22.05 (one record per line).
	out := "StepId=12.0 UserId=1001 StartTime=2026-12-04T21:40:01 TimeLimit=UNLIMITED State=RUNNING Partition=cruz NodeList=node[1-2] Nodes=2 CPUs=4 Tasks=4 Name=mpi_allreduce Network=(null) TRES=cpu=4,mem=0,node=2 ResvPorts=(null) CPUFreqReq=Default Dist=Block SrunHost:Pid=h:77\n"
	s, err := ParseStep(out, "12.0")
	require.NoError(t, err)
	assert.Equal(t, Step{ID: "12.0", UID: 1001, Nodes: []string{"node1", "node2"}, Tasks: 4}, s)

	s, err = ParseStep("StepId=3.1 UserId=cruzt1(1001) NodeList=n5 Tasks=1\nStepId=3.2 UserId=0 NodeList=n6 Tasks=2\n", "3.2")
	require.NoError(t, err)
	assert.Equal(t, Step{ID: "3.2", UID: 0, Nodes: []string{"n6"}, Tasks: 2}, s)
	s, err = ParseStep("StepId=3.1 UserId=cruzt1(1001) NodeList=n5 Tasks=1\n", "3.1")
	require.NoError(t, err)
	assert.Equal(t, uint32(1001), s.UID)

	for _, tc := range []struct{ out, err string }{
		{"", "slurmctld knows no step 9.0"},
		{"StepId=9.1 UserId=1 NodeList=a Tasks=1", "no record of step 9.0"},
		{"StepId=9.0 UserId=x NodeList=a Tasks=1", "not a uid"},
		{"StepId=9.0 UserId=1 NodeList=a[ Tasks=1", "NodeList"},
		{"StepId=9.0 UserId=1 NodeList=a Tasks=0", "not a task count"},
		{"StepId=9.0 UserId=1 NodeList=a", "not a task count"},
	} {
		_, err := ParseStep(tc.out, "9.0")
		require.Error(t, err, tc.out)
		assert.Contains(t, err.Error(), tc.err, tc.out)
	}
}
