package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cruz-hpc/cruz/internal/api"
)

// TestMigrateOpensFilesAsOwner (issue 11.1, the migration path): cruzt1's
// plain job on node1 holds ~/f open for appending; while `cruz migrate`
// moves its pod to node2, cruzt1 swaps f for a link to a root-owned file
// right after the target agent has put f back, before CRIU opens it. The
// migration is refused, naming root's file; the job runs on where it was
// and still appends to its own file; root's file is untouched.
func TestMigrateOpensFilesAsOwner(t *testing.T) {
	_, _, n1, u, dir := clusterSetup(t, 2)
	f := filepath.Join(dir, "f")
	_, target, _ := rootSecret(t)
	const rootContent = "root's-xyz\n" // as long as f: CRIU's size check passes
	require.NoError(t, os.WriteFile(target, []byte(rootContent), 0o644))
	require.NoError(t, os.Chmod(target, 0o644))
	r := runAs(t, u, "/bin/sh", "-c", `umask 022; printf 'cruzt1 own\n' > "$1" && ln -s "$2" "$1.lnk"`, "sh", f, target)
	require.Equal(t, 0, r.Code, r.Stderr)

	run := n1.startCruz(u, dir, "run", "--plain", "--name", "mover", "--", "/bin/sh", "-c", fileHolderScript, "sh", dir)
	run.waitOutput(t, "ready\n", 30*time.Second)
	pods := n1.status(u, "mover").Pods
	require.Len(t, pods, 1, "a plain job's one pod")
	out, stop := startSwapper(t, u, f, swapAfterPutBack)
	r = n1.cruz(u, dir, "migrate", "--pod", pods[0].Name, "--to", "node2", "mover")
	stop()
	require.Equal(t, "swapped\n", out.String(), "the swap happened after the target put f back")
	assert.Equal(t, 1, r.Code, "migrate; stdout %q stderr %q", r.Stdout, r.Stderr)
	assert.Contains(t, r.Stderr, fmt.Sprintf("restored pod holds %s opened for writing, which %s may not write", target, u.Name))
	b, err := os.ReadFile(target)
	require.NoError(t, err)
	assert.Equal(t, rootContent, string(b), "root's file is untouched")

	// The job runs on, on node1, with its own file.
	runCommand(t, perlAs(u, f, swapBack), time.Minute)
	j := n1.status(u, "mover")
	require.Equal(t, api.StateRunning, j.State)
	for _, p := range j.Pods {
		assert.Equal(t, "node1", p.Node, "pod %s stays where it was", p.Name)
	}
	r = runAs(t, u, "/bin/sh", "-c", `: > "$1/go"`, "sh", dir)
	require.Equal(t, 0, r.Code, r.Stderr)
	res := run.wait(t, 30*time.Second)
	require.Equal(t, 0, res.Code, "stderr:\n%s", res.Stderr)
	assert.Contains(t, res.Stdout, "wrote\n")
	b, err = os.ReadFile(f)
	require.NoError(t, err)
	assert.Equal(t, "cruzt1 own\nappended\n", string(b), "the job appended to its own file")
	b, err = os.ReadFile(target)
	require.NoError(t, err)
	assert.Equal(t, rootContent, string(b), "root's file is untouched")
}
