package agent

import (
	"context"
	"sync"
	"testing"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A watched checkpoint reports its phases in order, the pods of each node
// as it answers, and ends with the checkpoint's bytes.
func TestCheckpointReportsProgress(t *testing.T) {
	a, fc := newTestAgent(t, "n1", "n2")
	j := addJob(t, a, fc, "job1", twoNodes)
	var mu sync.Mutex
	var got []api.Progress
	ctx := withProgress(context.Background(), func(p api.Progress) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, p)
	})
	m, err := a.checkpointLocked(ctx, j, false)
	require.NoError(t, err)

	var phases []string
	dumped := 0
	for _, p := range got {
		assert.Equal(t, "checkpoint", p.Op)
		assert.Equal(t, "job1", p.Job)
		assert.Equal(t, 4, p.Pods)
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
		if p.Phase == "dump" {
			dumped = max(dumped, p.PodsDone)
		}
	}
	assert.Equal(t, []string{"block", "dump", "resume", "commit", "done"}, phases)
	assert.Equal(t, 4, dumped, "every node's pods were counted as it answered")
	last := got[len(got)-1]
	assert.Equal(t, m.Bytes, last.Bytes)
	for i := 1; i < len(got); i++ {
		assert.GreaterOrEqual(t, got[i].ElapsedMS, got[i-1].ElapsedMS)
	}
}

// Nobody watching: nothing is reported, and nothing breaks.
func TestProgressUnwatched(t *testing.T) {
	p := newProgress(context.Background(), "checkpoint", "j", 2)
	assert.Nil(t, p)
	p.phase("dump")
	p.bytes(5)
	p.pollBytes(func() (int64, error) { return 0, nil })()
	assert.Equal(t, context.Background(), p.watchNodes(context.Background()))
}
