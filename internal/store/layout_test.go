package store

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cruz-hpc/cruz/internal/version"
)

var layoutOwner = Owner{UID: 1000, GID: 1000}

// rootEntries lists a store root's names with their sizes, to show that a
// refused Open changed nothing.
func rootEntries(t *testing.T, root string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	require.NoError(t, filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = fi.Size()
		return nil
	}))
	return out
}

// requireMarker checks the marker of root: one file, root's own, 0644, with
// no temporary marker left, and returns its content.
func requireMarker(t *testing.T, root string) string {
	t.Helper()
	path := filepath.Join(root, layoutName)
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	require.True(t, fi.Mode().IsRegular())
	assert.Equal(t, os.FileMode(0o644), fi.Mode().Perm())
	assert.Equal(t, uint32(os.Geteuid()), fi.Sys().(*syscall.Stat_t).Uid)
	ents, err := os.ReadDir(root)
	require.NoError(t, err)
	for _, e := range ents {
		assert.False(t, isLayoutTemp(e.Name()), "temporary marker %s left", e.Name())
	}
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(data)
}

func TestLayoutFreshStore(t *testing.T) {
	root := filepath.Join(t.TempDir(), "ckpts")
	s, err := Open(root, testKey)
	require.NoError(t, err)
	l := s.Layout()
	assert.Equal(t, LayoutInfo{Version: 2, WrittenBy: "cruz " + version.String(), Written: l.Written}, l)
	assert.NotEmpty(t, l.Written)
	assert.Equal(t, fmt.Sprintf("cruz-store-layout 2\nwritten-by cruz %s\nwritten %s\n", version.String(), l.Written), requireMarker(t, root))

	// Opened again (the next start, or another node): read, not rewritten.
	s2, err := Open(root, testKey)
	require.NoError(t, err)
	l2 := s2.Layout()
	assert.True(t, l2.Marked)
	assert.Equal(t, 2, l2.Found)
	l2.Found, l2.Marked = 0, false
	assert.Equal(t, l, l2, "the marker is the first one")

	// The marker is no job: a store with it lists none, and works.
	jobs, err := s2.Jobs()
	require.NoError(t, err)
	assert.Empty(t, jobs)
	commit(t, s2, "job1", layoutOwner, defaultPods())
	jobs, err = s2.Jobs()
	require.NoError(t, err)
	assert.Equal(t, []string{"job1"}, jobs)
}

// A store of before the marker (layout 1: job directories, some without an
// owner record) is read as it is and marked as layout 2, upgraded from 1.
func TestLayoutV1StoreUpgraded(t *testing.T) {
	s := openTestStore(t)
	id := commit(t, s, "job1", layoutOwner, defaultPods()).ID
	root := s.Root()
	// What a cruzd of layout 1 left: no marker, no owner record.
	require.NoError(t, os.Remove(filepath.Join(root, layoutName)))
	require.NoError(t, os.Remove(filepath.Join(root, "job1", ownerName)))

	s2, err := Open(root, testKey)
	require.NoError(t, err)
	l := s2.Layout()
	assert.Equal(t, LayoutInfo{Version: 2, WrittenBy: "cruz " + version.String(), Written: l.Written, UpgradedFrom: 1, Found: 1}, l)
	assert.Equal(t, fmt.Sprintf("cruz-store-layout 2\nwritten-by cruz %s\nwritten %s\nupgraded-from 1\n", version.String(), l.Written), requireMarker(t, root))

	// Its checkpoint reads as before, and its directory gets its owner
	// record at first use.
	m, _, skipped, err := s2.Latest("job1")
	require.NoError(t, err)
	assert.Empty(t, skipped)
	assert.Equal(t, id, m.ID)
	require.NoError(t, s2.CheckOwner("job1", layoutOwner))
	rec, err := readOwner(filepath.Join(root, "job1"))
	require.NoError(t, err)
	assert.Equal(t, layoutOwner.UID, rec.UID)

	s3, err := Open(root, testKey)
	require.NoError(t, err)
	assert.Equal(t, 1, s3.Layout().UpgradedFrom, "the marker keeps saying what it upgraded")
	assert.True(t, s3.Layout().Marked)
}

// A marker this cruzd wrote, or one of an earlier layout, is read and left
// alone; lines it does not know are ignored.
func TestLayoutCurrentAndOlderMarker(t *testing.T) {
	for _, c := range []struct {
		content string
		want    LayoutInfo
	}{
		{"cruz-store-layout 2\nwritten-by cruz 0.1.9 (commit x)\nwritten 2026-01-02T03:04:05Z\nsomething-new 7\n",
			LayoutInfo{Version: 2, WrittenBy: "cruz 0.1.9 (commit x)", Written: "2026-01-02T03:04:05Z", Found: 2, Marked: true}},
		{"cruz-store-layout 2", LayoutInfo{Version: 2, Found: 2, Marked: true}},
		{"cruz-store-layout 1\n", LayoutInfo{Version: 1, Found: 1, Marked: true}},
	} {
		root := filepath.Join(t.TempDir(), "ckpts")
		require.NoError(t, os.Mkdir(root, 0o711))
		require.NoError(t, os.WriteFile(filepath.Join(root, layoutName), []byte(c.content), 0o644))
		s, err := Open(root, testKey)
		require.NoError(t, err, c.content)
		assert.Equal(t, c.want, s.Layout(), c.content)
		assert.Equal(t, c.content, requireMarker(t, root), "unchanged")
	}
}

func TestLayoutNewerRefused(t *testing.T) {
	for _, c := range []struct{ content, by string }{
		{"cruz-store-layout 99\nwritten-by cruz 9.1.0 (commit 0123456789ab)\n", "cruz 9.1.0 (commit 0123456789ab)"},
		{"cruz-store-layout 3\n", "a cruz that did not say its version"},
	} {
		root := filepath.Join(t.TempDir(), "ckpts")
		require.NoError(t, os.Mkdir(root, 0o711))
		require.NoError(t, os.Mkdir(filepath.Join(root, "job1"), 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(root, layoutName), []byte(c.content), 0o644))
		before := rootEntries(t, root)

		_, err := Open(root, testKey)
		require.ErrorIs(t, err, ErrLayout)
		n := strings.TrimSuffix(strings.TrimPrefix(strings.SplitN(c.content, "\n", 2)[0], "cruz-store-layout "), "\n")
		assert.Equal(t, fmt.Sprintf("checkpoint store layout not readable: the checkpoint store %s has layout version %s, written by %s; "+
			"this cruzd (version %s) reads layouts up to 2: upgrade cruz on this node", root, n, c.by, version.String()), err.Error())
		assert.Equal(t, before, rootEntries(t, root), "a refused open changes nothing")
		assert.Equal(t, c.content, requireMarker(t, root))
	}
}

func TestLayoutGarbledRefused(t *testing.T) {
	for _, content := range []string{
		"",
		"hello\n",
		"cruz-store-layout\n",
		"cruz-store-layout two\n",
		"cruz-store-layout 0\n",
		"cruz-store-layout -2\n",
		"cruz-store-layout 02\n",
		"cruz-store-layout  2\n",
		"cruz-store-layout 2 3\n",
		" cruz-store-layout 2\n",
		"cruz-store-layout 2\r\n",
		"cruz-store-layout 99999999999999999999\n",
		"\x00\x01\x02",
		"cruz-store-layout 2\n" + strings.Repeat("x", maxLayoutSize),
	} {
		root := filepath.Join(t.TempDir(), "ckpts")
		require.NoError(t, os.Mkdir(root, 0o711))
		marker := filepath.Join(root, layoutName)
		require.NoError(t, os.WriteFile(marker, []byte(content), 0o644))
		_, err := Open(root, testKey)
		require.ErrorIs(t, err, ErrLayout, "%q", content)
		assert.ErrorContains(t, err, "the checkpoint store's layout marker "+marker+" is garbled (", "%q", content)
		assert.ErrorContains(t, err, `it must begin with the line "cruz-store-layout N"; if the store was written by a cruz of layout 2 or earlier, remove the file and start cruzd again`)
		assert.NotContains(t, err.Error(), "\x00", "the message quotes no control characters")
		assert.Equal(t, content, requireMarker(t, root), "unchanged")
	}
}

// The marker must be root's own regular file: a link, a directory, a file
// others may write or another user's is refused and left alone.
func TestLayoutUntrustedMarkerRefused(t *testing.T) {
	mk := func(t *testing.T) (root, marker string) {
		root = filepath.Join(t.TempDir(), "ckpts")
		require.NoError(t, os.Mkdir(root, 0o711))
		return root, filepath.Join(root, layoutName)
	}
	t.Run("symlink", func(t *testing.T) {
		root, marker := mk(t)
		target := filepath.Join(t.TempDir(), "elsewhere")
		require.NoError(t, os.WriteFile(target, []byte("cruz-store-layout 2\n"), 0o644))
		require.NoError(t, os.Symlink(target, marker))
		_, err := Open(root, testKey)
		require.ErrorIs(t, err, ErrLayout)
		assert.ErrorContains(t, err, "the checkpoint store's layout marker "+marker+" is not trusted: it is a symbolic link; it must be a regular file of root that only root can write")
		fi, err := os.Lstat(marker)
		require.NoError(t, err)
		assert.Equal(t, os.ModeSymlink, fi.Mode().Type(), "left alone")
	})
	t.Run("directory", func(t *testing.T) {
		root, marker := mk(t)
		require.NoError(t, os.Mkdir(marker, 0o755))
		_, err := Open(root, testKey)
		require.ErrorIs(t, err, ErrLayout)
		assert.ErrorContains(t, err, marker+" is not trusted: it is not a regular file (d")
	})
	t.Run("writable by others", func(t *testing.T) {
		root, marker := mk(t)
		require.NoError(t, os.WriteFile(marker, []byte("cruz-store-layout 2\n"), 0o644))
		require.NoError(t, os.Chmod(marker, 0o666))
		_, err := Open(root, testKey)
		require.ErrorIs(t, err, ErrLayout)
		assert.ErrorContains(t, err, marker+" is not trusted: group or others may write it (mode 0666)")
		assert.ErrorContains(t, err, "chown root:root "+marker+" && chmod 644 "+marker)
	})
	t.Run("another user's", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("SKIPPED: needs root to chown the marker to another uid")
		}
		root, marker := mk(t)
		require.NoError(t, os.WriteFile(marker, []byte("cruz-store-layout 2\n"), 0o644))
		require.NoError(t, os.Chown(marker, 1001, 1001))
		_, err := Open(root, testKey)
		require.ErrorIs(t, err, ErrLayout)
		assert.ErrorContains(t, err, marker+" is not trusted: it belongs to uid 1001, not 0")
	})
}

// Agents of several nodes opening one new shared store at once: all
// succeed and agree on the one marker that won.
func TestLayoutConcurrentOpen(t *testing.T) {
	for _, v1 := range []bool{false, true} {
		root := filepath.Join(t.TempDir(), "ckpts")
		if v1 {
			require.NoError(t, os.MkdirAll(filepath.Join(root, "job1"), 0o700))
			require.NoError(t, os.Chmod(root, 0o711))
		}
		const n = 8
		var wg sync.WaitGroup
		infos := make([]LayoutInfo, n)
		errs := make([]error, n)
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				s, err := Open(root, testKey)
				errs[i] = err
				if err == nil {
					infos[i] = s.Layout()
				}
			}()
		}
		close(start)
		wg.Wait()
		content := requireMarker(t, root)
		won, err := parseLayout([]byte(content))
		require.NoError(t, err)
		for i := range n {
			require.NoError(t, errs[i], "open %d", i)
			got := infos[i]
			got.Found, got.Marked = 0, false
			assert.Equal(t, won, got, "open %d read the marker that won", i)
		}
		assert.Equal(t, 2, won.Version)
		if v1 {
			assert.Equal(t, 1, won.UpgradedFrom)
		} else {
			assert.Equal(t, 0, won.UpgradedFrom)
		}
	}
}

func TestCleanTempRemovesLayoutTemp(t *testing.T) {
	s := openTestStore(t)
	stale := filepath.Join(s.Root(), layoutTmpPrefix+"123")
	require.NoError(t, os.WriteFile(stale, []byte("cruz-store-layout 2\n"), 0o644))
	n, err := s.CleanTemp("")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.NoFileExists(t, stale)
	assert.FileExists(t, filepath.Join(s.Root(), layoutName), "the marker stays")
}
