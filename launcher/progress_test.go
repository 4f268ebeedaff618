package launcher

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A checkpoint's progress as the agent streams it: block, dump with two
// nodes answering and the bytes growing, resume, commit, done.
func checkpointProgress() []api.Progress {
	p := api.Progress{Op: "checkpoint", Job: "job-3", Pods: 4}
	var out []api.Progress
	step := func(ms int64, change func(p *api.Progress)) {
		change(&p)
		p.ElapsedMS = ms
		out = append(out, p)
	}
	step(0, func(p *api.Progress) { p.Phase = "block" })
	step(5, func(p *api.Progress) { p.Phase = "dump" })
	step(255, func(p *api.Progress) { p.Bytes = 3 << 20 })
	step(505, func(p *api.Progress) { p.Bytes = 6 << 20 })
	step(700, func(p *api.Progress) { p.PodsDone = 2 })
	step(1300, func(p *api.Progress) { p.Bytes = 12 << 20 })
	step(1400, func(p *api.Progress) { p.PodsDone = 4 })
	step(1410, func(p *api.Progress) { p.Phase, p.PodsDone = "resume", 0 })
	step(1420, func(p *api.Progress) { p.Phase = "commit" })
	step(1900, func(p *api.Progress) { p.Phase, p.Bytes = "done", 12<<20+4096 })
	return out
}

func TestPlainProgress(t *testing.T) {
	var b bytes.Buffer
	var now time.Time
	v := &plainProgress{w: &b, now: func() time.Time { return now }}
	for _, p := range checkpointProgress() {
		now = time.Unix(0, 0).Add(time.Duration(p.ElapsedMS) * time.Millisecond)
		v.show(p)
	}
	v.end()
	// A line per phase and per node done; the bytes alone at most once a
	// second after the last line (3 MiB at 0.3 s and 12 MiB at 1.3 s are
	// left out, the next lines show them).
	assert.Equal(t, `checkpoint job-3: block, 0.0s
checkpoint job-3: dump 0/4 pods, 0.0s
checkpoint job-3: dump 2/4 pods, 6.0MiB, 0.7s
checkpoint job-3: dump 4/4 pods, 12.0MiB, 1.4s
checkpoint job-3: resume, 12.0MiB, 1.4s
checkpoint job-3: commit, 12.0MiB, 1.4s
checkpoint job-3: done, 12.0MiB, 1.9s
`, b.String())
}

func TestJSONProgress(t *testing.T) {
	var b bytes.Buffer
	v := &jsonProgress{w: &b}
	in := checkpointProgress()
	for _, p := range in {
		v.show(p)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	require.Len(t, lines, len(in), "one line per progress frame")
	for i, l := range lines {
		var f api.Frame
		require.NoError(t, json.Unmarshal([]byte(l), &f), l)
		require.NotNil(t, f.Progress, l)
		assert.Equal(t, in[i], *f.Progress)
	}
	assert.Equal(t, `{"progress":{"op":"checkpoint","job":"job-3","phase":"block","pods":4,"pods_done":0,"bytes":0,"elapsed_ms":0}}`, lines[0])
}

func TestBarProgressEndsCleared(t *testing.T) {
	var b bytes.Buffer
	v := &barProgress{w: &b}
	for _, p := range checkpointProgress() {
		v.show(p)
	}
	v.end()
	assert.Contains(t, b.String(), "checkpoint job-3: dump", "the bar is described by the phase")
	out := b.String()
	assert.True(t, strings.HasSuffix(strings.TrimRight(out, " "), "\r"), "the bar clears its line when done: %q", out[max(0, len(out)-40):])
}
