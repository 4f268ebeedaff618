package node

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestParseSlurmJob(t *testing.T) {
	for _, tc := range []struct {
		id        string
		job, step uint32
		ok        bool
	}{
		{"slurm-5-0", 5, 0, true},
		{"slurm-4294967295-12", 4294967295, 12, true},
		{"slurm-5", 0, 0, false},
		{"slurm-5-x", 0, 0, false},
		{"slurm--1-0", 0, 0, false},
		{"slurm-4294967296-0", 0, 0, false},
		{"job1", 0, 0, false},
		{"xslurm-5-0", 0, 0, false},
	} {
		job, step, ok := parseSlurmJob(tc.id)
		assert.Equal(t, tc.ok, ok, tc.id)
		assert.Equal(t, tc.job, job, tc.id)
		assert.Equal(t, tc.step, step, tc.id)
	}
}
