package e2e

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cruz-hpc/cruz/tests/testenv"
)

// storeTree describes every entry under root (mode, owner, size, mtime), to
// show that a refused start changed nothing.
func storeTree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		rel, _ := filepath.Rel(root, p)
		out[rel] = fmt.Sprintf("%v uid=%d size=%d mtime=%d", fi.Mode(), st.Uid, fi.Size(), fi.ModTime().UnixNano())
		return nil
	}))
	return out
}

// readMarker reads the store's layout marker, which must be root's 0644
// regular file.
func readMarker(t *testing.T, store string) string {
	t.Helper()
	path := filepath.Join(store, ".cruz-store")
	fi, err := os.Lstat(path)
	require.NoError(t, err, "the store has a layout marker")
	require.True(t, fi.Mode().IsRegular())
	assert.Equal(t, os.FileMode(0o644), fi.Mode().Perm())
	assert.Equal(t, uint32(0), fi.Sys().(*syscall.Stat_t).Uid)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

// TestStoreLayoutMarker (issue 14.9): an agent started on a new store
// records the store's layout; on a store whose marker says layout 99 cruzd
// refuses to start, says what to do and changes nothing; on a store of
// layout 1 (a job's directory, no marker) it starts, reads it and marks it
// as layout 2, upgraded from 1.
func TestStoreLayoutMarker(t *testing.T) {
	a := newAgent(t, agentOptions{})
	v := runCommand(t, exec.Command(testenv.Bin(t, "cruzd"), "--version"), 10*time.Second)
	require.Equal(t, 0, v.Code)
	cruzdVersion := strings.TrimPrefix(strings.SplitN(v.Stdout, "\n", 2)[0], "cruzd ")
	require.Regexp(t, `^\d+\.\d+\.\d+ \(commit .+\)$`, cruzdVersion)

	// A new store: the agent writes the marker of its layout.
	a.start()
	a.stop()
	marker := readMarker(t, a.store)
	lines := strings.Split(strings.TrimSuffix(marker, "\n"), "\n")
	require.Len(t, lines, 3, "marker:\n%s", marker)
	assert.Equal(t, "cruz-store-layout 2", lines[0])
	assert.Equal(t, "written-by cruz "+cruzdVersion, lines[1])
	assert.Regexp(t, `^written \d{4}-\d\d-\d\dT`, lines[2])
	assert.Contains(t, a.log(), `msg="new checkpoint store: recorded its layout"`)

	// A newer layout: cruzd refuses at once, and changes nothing.
	require.NoError(t, os.Mkdir(filepath.Join(a.store, "job1"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(a.store, "job1", "keep"), []byte("a job's file\n"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(a.store, ".cruz-store"),
		[]byte("cruz-store-layout 99\nwritten-by cruz 9.1.0 (commit 0123456789ab)\n"), 0o644))
	before := storeTree(t, a.store)
	start := time.Now()
	r := runCommand(t, exec.Command(testenv.Bin(t, "cruzd"), "--config", a.config), 30*time.Second)
	took := time.Since(start)
	t.Logf("cruzd refused the layout 99 store in %s", took)
	require.Equal(t, 1, r.Code, "cruzd exits 1; stderr:\n%s", r.Stderr)
	stderr := strings.Split(strings.TrimSuffix(r.Stderr, "\n"), "\n")
	assert.Equal(t, fmt.Sprintf("cruzd: open checkpoint store (store.dir): checkpoint store layout not readable: the checkpoint store %s has layout version 99, "+
		"written by cruz 9.1.0 (commit 0123456789ab); this cruzd (version %s) reads layouts up to 2: upgrade cruz on this node", a.store, cruzdVersion),
		stderr[len(stderr)-1], "its last line says what is wrong and what to do")
	assert.Equal(t, before, storeTree(t, a.store), "the refused start changed nothing in the store")
	assert.NoFileExists(t, a.socket, "it never listened")

	// A store of layout 1: read as it is and marked, upgraded from 1.
	require.NoError(t, os.Remove(filepath.Join(a.store, ".cruz-store")))
	a.start()
	a.stop()
	marker = readMarker(t, a.store)
	lines = strings.Split(strings.TrimSuffix(marker, "\n"), "\n")
	require.Len(t, lines, 4, "marker:\n%s", marker)
	assert.Equal(t, "cruz-store-layout 2", lines[0])
	assert.Equal(t, "written-by cruz "+cruzdVersion, lines[1])
	assert.Equal(t, "upgraded-from 1", lines[3])
	assert.Contains(t, a.log(), `msg="checkpoint store without a layout marker (layout 1): read as it is and marked with this cruzd's layout (docs/store-layout.md)" store=`+a.store+` layout=2`)
	b, err := os.ReadFile(filepath.Join(a.store, "job1", "keep"))
	require.NoError(t, err)
	assert.Equal(t, "a job's file\n", string(b), "the layout 1 job directory is as it was")
}
