package launcher

import (
	"bytes"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func reportInput() (api.Job, []api.Checkpoint, []api.Event) {
	t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	j := api.Job{ID: "job-7", Name: "lj", State: api.StateRunning, Policy: "checkpoint every 2s, keep 3"}
	cks := []api.Checkpoint{
		{ID: "ckpt-0002", Created: t0.Add(2 * time.Second), Bytes: 8 << 20, Phases: map[string]int64{"block": 3, "dump": 200, "resume": 7, "held": 210, "commit": 50}},
		{ID: "ckpt-0004", Created: t0.Add(9 * time.Second), Bytes: 10 << 20, Phases: map[string]int64{"block": 5, "dump": 400, "resume": 5, "held": 410, "commit": 60}},
		{ID: "ckpt-0005", Created: t0.Add(12 * time.Second), Bytes: 9 << 20, Stopped: true, Phases: map[string]int64{"block": 4, "dump": 300, "commit": 40}},
	}
	evs := []api.Event{
		{Time: t0, Kind: api.EventStarted, Message: "started 2 ranks on node1; checkpoint every 2s"},
		{Time: t0.Add(2 * time.Second), Kind: api.EventCheckpoint, Checkpoint: "ckpt-0002", Message: "checkpoint ckpt-0002: 8.0 MiB"},
		{Time: t0.Add(5 * time.Second), Kind: api.EventCheckpointFailed, Message: "checkpoint failed: no space left on device\nmore"},
		{Time: t0.Add(6 * time.Second), Kind: api.EventStretched, Message: "checkpoints spaced 4s apart"},
		{Time: t0.Add(10 * time.Second), Kind: api.EventOutput, Message: "not in a report"},
	}
	return j, cks, evs
}

func TestReportTable(t *testing.T) {
	r := buildReport(reportInput())
	assert.Equal(t, 3, r.Count)
	assert.Equal(t, 1, r.Failed)
	assert.Equal(t, 1, r.Stretch)
	assert.Equal(t, 310*time.Millisecond, r.Held, "the mean of the checkpoints that resumed the job (a stop-checkpoint holds it for good)")
	assert.Equal(t, 410*time.Millisecond, r.MaxHeld)
	assert.Equal(t, int64(9<<20), r.Bytes)
	var b bytes.Buffer
	printReport(&b, r, time.UTC)
	assert.Equal(t, `job job-7 (lj), running; policy: checkpoint every 2s, keep 3
3 checkpoints: held the job 310ms on average (at most 410ms), 9.0MiB each on average; 1 failed; interval stretched 1 times; 0 failures of the job

TIME                 WHAT               CHECKPOINT  HELD   BLOCK  DUMP   RESUME  COMMIT  SIZE     NOTE
2026-12-04 10:00:00  started            -                                                         started 2 ranks on node1; checkpoint every 2s
2026-12-04 10:00:02  checkpoint         ckpt-0002   210ms  3ms    200ms  7ms     50ms    8.0MiB   
2026-12-04 10:00:05  checkpoint_failed  -                                                         checkpoint failed: no space left on device
2026-12-04 10:00:06  stretched          -                                                         checkpoints spaced 4s apart
2026-12-04 10:00:09  checkpoint         ckpt-0004   410ms  5ms    400ms  5ms     60ms    10.0MiB  
2026-12-04 10:00:12  checkpoint         ckpt-0005   -      4ms    300ms  -       40ms    9.0MiB   stopped the job
`, b.String())
}

func TestReportPNG(t *testing.T) {
	r := buildReport(reportInput())
	path := filepath.Join(t.TempDir(), "r.png")
	var out bytes.Buffer
	require.NoError(t, writePNG(path, func(w io.Writer) error { return plotReport(w, r, 640, 480) }, &out))
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	require.NoError(t, err, "a valid PNG")
	assert.Equal(t, 640, cfg.Width)
	assert.Equal(t, 480, cfg.Height)
	assert.Contains(t, out.String(), "wrote "+path)

	// A job without checkpoints still gets its (empty) plot.
	empty := buildReport(api.Job{ID: "j"}, nil, nil)
	var b bytes.Buffer
	require.NoError(t, plotReport(&b, empty, 300, 200))
	_, err = png.DecodeConfig(&b)
	require.NoError(t, err)
}

func TestParseSize(t *testing.T) {
	w, h, err := parseSize("1200x800")
	require.NoError(t, err)
	assert.Equal(t, [2]int{1200, 800}, [2]int{w, h})
	for _, bad := range []string{"", "1200", "x800", "100x100", "1200x800x2", "12k x 8", "9000x800"} {
		_, _, err := parseSize(bad)
		assert.ErrorContains(t, err, "is not WIDTHxHEIGHT in pixels", bad)
	}
}
