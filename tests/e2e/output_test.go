package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/joblog"
	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestOutputLogBound: a job prints far more than its agent's output log may
// hold (output.max_log_bytes = 64 KiB). The client gets the output up to the
// bound, then one line on stderr that says the rest is discarded and why;
// the job runs to its end and its status is passed on; the event log says
// so; the log on the node stays at its bound.
func TestOutputLogBound(t *testing.T) {
	const limit = 65536
	a := startAgent(t, agentOptions{extra: "[output]\nmax_log_bytes = 65536\n"})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	// 2 MB of output, then a last line, and status 7.
	r := a.cruz(u, dir, "run", "--plain", "--name", "chatty", "--", "/bin/sh", "-c",
		"i=0; while [ $i -lt 2000 ]; do printf '%01000d\\n' $i; i=$((i+1)); done; echo last; exit 7")
	assert.Equal(t, 7, r.Code, "the job's status is passed on; stderr:\n%s", r.Stderr)
	lines := check.Lines(r.Stdout)
	require.NotEmpty(t, lines)
	assert.Less(t, len(r.Stdout), limit, "the client got no more than the log holds")
	assert.Greater(t, len(lines), 20, "output up to the bound is shown")
	assert.NotContains(t, r.Stdout, "last", "output past the bound is discarded")
	// The job's lines, in order, up to the cut (which may be mid-line: the
	// bound drops whole frames, and pipes cut frames anywhere).
	for i, l := range lines[:len(lines)-1] {
		require.Equal(t, fmt.Sprintf("%01000d", i), l)
	}
	assert.Contains(t, r.Stderr, strings.TrimSpace(joblog.LimitNotice(limit)))

	var limited []api.Event
	for _, e := range a.events(u, "chatty") {
		if e.Kind == api.EventOutputLimit {
			limited = append(limited, e)
		}
	}
	require.Len(t, limited, 1, "one event says the output was cut")
	assert.Contains(t, limited[0].Message, "65536 bytes (output.max_log_bytes in cruzd.toml)")
	assert.Equal(t, api.StateExited, a.status(u, "chatty").State)

	job := a.status(u, "chatty")
	st, err := os.Stat(a.runDir + "/jobs/" + job.ID + "/output")
	require.NoError(t, err)
	assert.Less(t, st.Size(), int64(limit+1024), "the log on the node stays at its bound")
	t.Logf("client: %d bytes of stdout, %d lines; log: %d bytes", len(r.Stdout), len(lines), st.Size())
}
