package launcher

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runCLI runs cruz with args against no agent at all: every case here must
// be settled before any request.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	t.Setenv("CRUZ_SOCKET", "/nonexistent/cruzd.sock")
	t.Setenv("CRUZ_CLUSTER_DIR", t.TempDir())
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCLIUsageErrorsNeedNoAgent(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run"}, "usage: cruz run"},
		{[]string{"run", "--np", "0", "--", "x"}, "--np 0 is out of range: give a number of ranks from 1 to 256"},
		{[]string{"run", "--interval", "10x", "--", "x"}, `--interval "10x" is not a duration`},
		{[]string{"run", "--interval", "10ms", "--", "x"}, "at least 1s"},
		{[]string{"run", "--restart", "sometimes", "--", "x"}, `--restart "sometimes"`},
		{[]string{"run", "--keep", "-1", "--", "x"}, "--keep -1"},
		{[]string{"run", "--nodes", "a,,b", "--", "x"}, "has an empty name"},
		{[]string{"run", "--nodes", "node[1-2],node2", "--", "x"}, "names node2 twice"},
		{[]string{"run", "--np", "two", "--", "x"}, `invalid argument "two" for "--np"`},
		{[]string{"signal", "j"}, "usage: cruz signal JOB SIGNAL"},
		{[]string{"signal", "j", "NOPE"}, `unknown signal "NOPE"`},
		{[]string{"migrate", "--to", "n2", "j"}, "give one of --rank and --pod, and --to"},
		{[]string{"migrate", "--rank", "-1", "--to", "n2", "j"}, "ranks start at 0"},
		{[]string{"slurm-end", "x"}, `Slurm job id "x" is not a positive number`},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"status", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"cluster", "fail"}, "usage: cruz cluster fail [--dir DIR] NODE"},
		{[]string{"checkpoint", "a", "b"}, "too many arguments"},
		{[]string{"checkpoint", "--wait", "1.5s", "j"}, "--wait 1.5s is not a whole number of seconds from 0 to 1h"},
		{[]string{"checkpoint", "--wait", "-3s", "j"}, "--wait -3s is not a whole number of seconds"},
		{[]string{"checkpoint", "--wait", "soon", "j"}, `invalid argument "soon" for "--wait"`},
	} {
		code, out, stderr := runCLI(t, tc.args...)
		assert.Equal(t, ExitUsage, code, "cruz %v: stderr %s", tc.args, stderr)
		assert.Contains(t, stderr, tc.want, "cruz %v", tc.args)
		assert.Empty(t, out, "cruz %v", tc.args)
		assert.NotContains(t, stderr, "no cruz agent", "cruz %v asked the agent", tc.args)
	}
}

func TestCLIHelpAndVersionOnStdout(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"run", "--help"}, {"cluster", "--help"}, {"cluster", "up", "--help"}} {
		code, out, stderr := runCLI(t, args...)
		assert.Equal(t, 0, code, "cruz %v: %s", args, stderr)
		assert.Contains(t, out, "Usage:", "cruz %v", args)
	}
	code, out, _ := runCLI(t, "--version")
	assert.Equal(t, 0, code)
	assert.Regexp(t, `^cruz \d+\.\d+\.\d+ \(commit [^)]+\)\n$`, out)
	code, out, _ = runCLI(t, "completion", "bash")
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "bash completion")
}

func TestCLIRefusalIsExitOne(t *testing.T) {
	code, _, stderr := runCLI(t, "status")
	assert.Equal(t, ExitRefused, code)
	assert.Contains(t, stderr, "no cruz agent at /nonexistent/cruzd.sock")
}

func TestParseNodes(t *testing.T) {
	n, err := parseNodes("node[1-3],gpu7")
	require.NoError(t, err)
	assert.Equal(t, []string{"node1", "node2", "node3", "gpu7"}, n)
	n, err = parseNodes("")
	require.NoError(t, err)
	assert.Nil(t, n)
	_, err = parseNodes("node[3-1]")
	assert.Error(t, err)
}
