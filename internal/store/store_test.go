package store

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestCommitLoadRoundTrip(t *testing.T) {
	s := openTestStore(t)
	owner := Owner{UID: 1000, GID: 1001}
	big := make([]byte, 1<<20+7) // larger than the hash buffer
	rand.NewChaCha8([32]byte{2}).Read(big)
	pods := defaultPods()
	pods["rank1"]["pages-2.img"] = string(big)

	p, err := s.Begin("4f2a", owner)
	require.NoError(t, err)
	assert.Equal(t, "ckpt-0001", p.ID())
	writePods(t, p, pods)
	m := manifestFor(pods)
	m.Stopped = true
	m.Pods[1].IP = "10.0.0.2"
	m.Pods[1].MAC = "02:00:0a:00:00:02"
	m.Pods[1].Node = "node7"
	m.Pods[1].DumpMillis = 42
	m.Pods[1].Extra = map[string]string{"stdin": "pipe:[1234]"}
	m.Spec = json.RawMessage(`{ "argv": ["mpirun", "-n", "2"], "env": {"A": "<&>"} }`)
	warnings, err := p.Commit(m)
	require.NoError(t, err)
	assert.Empty(t, warnings)

	// Commit filled the manifest in.
	assert.Equal(t, FormatVersion, m.Format)
	assert.Equal(t, "ckpt-0001", m.ID)
	assert.Equal(t, "4f2a", m.Job)
	assert.Equal(t, owner, m.Owner)
	assert.False(t, m.Created.IsZero())
	assert.Contains(t, m.Phases, "commit")
	assert.Equal(t, int64(5), m.Phases["dump"])
	assert.NotEmpty(t, m.Signature)
	assert.JSONEq(t, `{"argv":["mpirun","-n","2"],"env":{"A":"<&>"}}`, string(m.Spec))
	assert.Equal(t, []FileEntry{
		{Path: "core-1.img", Size: int64(len("core of rank 0")), SHA256: sha("core of rank 0")},
		{Path: "pages-1.img", Size: int64(len("pages of rank 0")), SHA256: sha("pages of rank 0")},
		{Path: "sub/fdinfo-2.img", Size: int64(len("nested")), SHA256: sha("nested")},
	}, m.Pods[0].Files)
	require.Len(t, m.Pods[1].Files, 3)
	assert.Equal(t, FileEntry{Path: "pages-2.img", Size: int64(len(big)), SHA256: sha(string(big))}, m.Pods[1].Files[2])
	var total int64
	for _, pod := range m.Pods {
		var sum int64
		for _, f := range pod.Files {
			sum += f.Size
		}
		assert.Equal(t, sum, pod.Bytes)
		total += sum
	}
	assert.Equal(t, total, m.Bytes)

	// Only the final directory remains.
	jobDir := filepath.Join(s.Root(), "4f2a")
	assert.ElementsMatch(t, []string{".owner", ".seq", "ckpt-0001"}, entries(t, jobDir))

	loaded, dir, err := s.Load("4f2a", "ckpt-0001")
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(jobDir, "ckpt-0001"), dir)
	assert.True(t, m.Created.Equal(loaded.Created))
	loaded.Created = m.Created
	assert.Equal(t, m, loaded)
	got, err := os.ReadFile(filepath.Join(dir, "rank1", "pages-2.img"))
	require.NoError(t, err)
	assert.Equal(t, big, got)

	list, problems, err := s.List("4f2a")
	require.NoError(t, err)
	assert.Empty(t, problems)
	require.Len(t, list, 1)
	assert.Equal(t, m.Signature, list[0].Signature)

	latest, ldir, skipped, err := s.Latest("4f2a")
	require.NoError(t, err)
	assert.Empty(t, skipped)
	assert.Equal(t, dir, ldir)
	assert.Equal(t, "ckpt-0001", latest.ID)
	assert.NoError(t, s.Verify("4f2a", "ckpt-0001"))

	// Abort after Commit is a no-op; the checkpoint stays.
	assert.NoError(t, p.Abort())
	_, _, err = s.Load("4f2a", "ckpt-0001")
	assert.NoError(t, err)
}

func TestCrashBeforeRenameLeavesNothingListed(t *testing.T) {
	s := openTestStore(t)
	commit(t, s, "job1", Owner{1000, 1000}, defaultPods())

	// Crash while CRIU writes: Begin and images, no Commit.
	p2, err := s.Begin("job1", Owner{1000, 1000})
	require.NoError(t, err)
	writePods(t, p2, defaultPods())
	// Crash after the manifest was written, before the rename.
	p3, err := s.Begin("job1", Owner{1000, 1000})
	require.NoError(t, err)
	writePods(t, p3, defaultPods())
	manifest, err := os.ReadFile(filepath.Join(s.Root(), "job1", "ckpt-0001", manifestName))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(s.Root(), "job1", ".tmp-ckpt-0003", manifestName), manifest, 0o600))

	for _, st := range []*Store{s, reopen(t, s)} { // same process, and after a restart
		list, problems, err := st.List("job1")
		require.NoError(t, err)
		assert.Empty(t, problems)
		require.Len(t, list, 1)
		assert.Equal(t, "ckpt-0001", list[0].ID)
		m, _, skipped, err := st.Latest("job1")
		require.NoError(t, err)
		assert.Empty(t, skipped)
		assert.Equal(t, "ckpt-0001", m.ID)
		_, _, err = st.Load("job1", "ckpt-0002")
		assert.ErrorIs(t, err, ErrNotFound)
	}

	// The live Store leaves checkpoints it is still writing alone.
	n, err := s.CleanTemp("job1")
	require.NoError(t, err)
	assert.Equal(t, 0, n)

	// After a restart, both leftovers go.
	s2 := reopen(t, s)
	n, err = s2.CleanTemp("job1")
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.ElementsMatch(t, []string{".owner", ".seq", "ckpt-0001"}, entries(t, filepath.Join(s.Root(), "job1")))

	// Numbers of the crashed checkpoints are not reused.
	p4, err := s2.Begin("job1", Owner{1000, 1000})
	require.NoError(t, err)
	assert.Equal(t, "ckpt-0004", p4.ID())
	require.NoError(t, p4.Abort())

	// A final-named directory without a manifest (never made by this
	// package) is not accepted either.
	require.NoError(t, os.Mkdir(filepath.Join(s.Root(), "job1", "ckpt-0007"), 0o700))
	list, problems, err := s2.List("job1")
	require.NoError(t, err)
	assert.Len(t, list, 1)
	require.Len(t, problems, 1)
	assert.Contains(t, problems[0], "checkpoint ckpt-0007 of job job1: file manifest.json: missing")
}

func reopen(t *testing.T, s *Store) *Store {
	t.Helper()
	s2, err := Open(s.Root(), testKey)
	require.NoError(t, err)
	return s2
}

func TestCleanTempAllJobs(t *testing.T) {
	s := openTestStore(t)
	commit(t, s, "a", Owner{1000, 1000}, defaultPods())
	for _, job := range []string{"a", "b"} {
		p, err := s.Begin(job, Owner{1000, 1000})
		require.NoError(t, err)
		writePods(t, p, defaultPods())
	}
	require.NoError(t, os.Mkdir(filepath.Join(s.Root(), ".del-c.123"), 0o700)) // interrupted DeleteJob
	// An owner record written but never linked (a crash in writeOwner).
	require.NoError(t, os.WriteFile(filepath.Join(s.Root(), "b", ".owner.tmp-123"), []byte("{}"), 0o600))
	s2 := reopen(t, s)
	n, err := s2.CleanTemp("")
	require.NoError(t, err)
	assert.Equal(t, 4, n)
	assert.ElementsMatch(t, []string{".cruz-store", "a", "b"}, entries(t, s.Root()), "the layout marker stays")
	assert.ElementsMatch(t, []string{".owner", ".seq"}, entries(t, filepath.Join(s.Root(), "b")))
	list, _, err := s2.List("a")
	require.NoError(t, err)
	assert.Len(t, list, 1)
}

func TestVerifyRejectsTampering(t *testing.T) {
	const job = "4f2a"
	hint := "; restore another checkpoint with --checkpoint ID (see cruz checkpoints 4f2a)"
	tests := []struct {
		name   string
		tamper func(t *testing.T, dir string)
		want   string // after "checkpoint ckpt-0001 of job 4f2a: "
		listed bool   // List still shows it (only the manifest is checked there)
	}{
		{
			name: "altered byte",
			tamper: func(t *testing.T, dir string) {
				f, err := os.OpenFile(filepath.Join(dir, "rank1", "pages-1.img"), os.O_RDWR, 0)
				require.NoError(t, err)
				_, err = f.WriteAt([]byte("P"), 0)
				require.NoError(t, err)
				require.NoError(t, f.Close())
			},
			want:   "file rank1/pages-1.img: checksum mismatch: the image was altered or corrupted",
			listed: true,
		},
		{
			name: "truncated file",
			tamper: func(t *testing.T, dir string) {
				require.NoError(t, os.Truncate(filepath.Join(dir, "rank1", "pages-1.img"), 3))
			},
			want:   "file rank1/pages-1.img: size mismatch: 3 bytes on disk, 15 in the manifest: the image was truncated or altered",
			listed: true,
		},
		{
			name: "missing file",
			tamper: func(t *testing.T, dir string) {
				require.NoError(t, os.Remove(filepath.Join(dir, "rank0", "sub", "fdinfo-2.img")))
			},
			want:   "file rank0/sub/fdinfo-2.img: missing: the image is incomplete or a file was deleted",
			listed: true,
		},
		{
			name: "missing pod directory",
			tamper: func(t *testing.T, dir string) {
				require.NoError(t, os.RemoveAll(filepath.Join(dir, "rank1")))
			},
			want:   "file rank1: pod image directory missing",
			listed: true,
		},
		{
			name: "extra file",
			tamper: func(t *testing.T, dir string) {
				require.NoError(t, os.WriteFile(filepath.Join(dir, "rank0", "evil.img"), []byte("x"), 0o600))
			},
			want:   "file rank0/evil.img: not in the manifest: a file was added to the checkpoint after it was taken",
			listed: true,
		},
		{
			name: "extra pod directory",
			tamper: func(t *testing.T, dir string) {
				require.NoError(t, os.Mkdir(filepath.Join(dir, "rank9"), 0o700))
			},
			want:   "file rank9: not in the manifest",
			listed: true,
		},
		{
			name: "symlink instead of file",
			tamper: func(t *testing.T, dir string) {
				// Same content, so only the file type gives it away.
				target := filepath.Join(t.TempDir(), "pages")
				require.NoError(t, os.WriteFile(target, []byte("pages of rank 1"), 0o600))
				p := filepath.Join(dir, "rank1", "pages-1.img")
				require.NoError(t, os.Remove(p))
				require.NoError(t, os.Symlink(target, p))
			},
			want:   "file rank1/pages-1.img: is a symbolic link: checkpoints hold only regular files; the image was tampered with",
			listed: true,
		},
		{
			name: "symlinked pod directory",
			tamper: func(t *testing.T, dir string) {
				moved := filepath.Join(t.TempDir(), "rank1")
				require.NoError(t, exec.Command("cp", "-a", filepath.Join(dir, "rank1"), moved).Run())
				require.NoError(t, os.RemoveAll(filepath.Join(dir, "rank1")))
				require.NoError(t, os.Symlink(moved, filepath.Join(dir, "rank1")))
			},
			want:   "file rank1: is a symbolic link",
			listed: true,
		},
		{
			name: "fifo instead of file",
			tamper: func(t *testing.T, dir string) {
				p := filepath.Join(dir, "rank0", "core-1.img")
				require.NoError(t, os.Remove(p))
				require.NoError(t, unix.Mkfifo(p, 0o600))
			},
			want:   "file rank0/core-1.img: is not a regular file (named pipe)",
			listed: true,
		},
		{
			name: "forged manifest: owner changed",
			tamper: func(t *testing.T, dir string) {
				editManifest(t, dir, func(m map[string]any) { m["owner"].(map[string]any)["UID"] = 0 })
			},
			want: "file manifest.json: signature mismatch: the manifest was edited, or signed with another cluster key",
		},
		{
			name: "forged manifest: checksum updated to match an altered file",
			tamper: func(t *testing.T, dir string) {
				require.NoError(t, os.WriteFile(filepath.Join(dir, "rank1", "pages-1.img"), []byte("PAGES OF RANK 1"), 0o600))
				editManifest(t, dir, func(m map[string]any) {
					f := m["pods"].([]any)[1].(map[string]any)["files"].([]any)[1].(map[string]any)
					require.Equal(t, "pages-1.img", f["path"])
					f["sha256"] = sha("PAGES OF RANK 1")
				})
			},
			want: "file manifest.json: signature mismatch",
		},
		{
			name: "forged manifest: signature removed",
			tamper: func(t *testing.T, dir string) {
				editManifest(t, dir, func(m map[string]any) { m["signature"] = "" })
			},
			want: "file manifest.json: signature mismatch",
		},
		{
			name: "manifest missing",
			tamper: func(t *testing.T, dir string) {
				require.NoError(t, os.Remove(filepath.Join(dir, manifestName)))
			},
			want: "file manifest.json: missing: the checkpoint is incomplete or damaged",
		},
		{
			name: "manifest is a symlink",
			tamper: func(t *testing.T, dir string) {
				p := filepath.Join(dir, manifestName)
				target := filepath.Join(t.TempDir(), "m.json")
				require.NoError(t, os.Rename(p, target))
				require.NoError(t, os.Symlink(target, p))
			},
			want: "file manifest.json: is a symbolic link",
		},
		{
			name: "manifest garbage",
			tamper: func(t *testing.T, dir string) {
				require.NoError(t, os.WriteFile(filepath.Join(dir, manifestName), []byte("{not json"), 0o600))
			},
			want: "file manifest.json: unreadable",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTestStore(t)
			commit(t, s, job, Owner{1000, 1000}, defaultPods())
			dir := filepath.Join(s.Root(), job, "ckpt-0001")
			_, _, err := s.Load(job, "ckpt-0001")
			require.NoError(t, err)

			tt.tamper(t, dir)

			m, d, err := s.Load(job, "ckpt-0001")
			require.Error(t, err)
			assert.Nil(t, m)
			assert.Empty(t, d)
			assert.ErrorIs(t, err, ErrCorrupt)
			msg := err.Error()
			assert.True(t, strings.HasPrefix(msg, "checkpoint ckpt-0001 of job 4f2a: "+tt.want), "got %q", msg)
			assert.True(t, strings.HasSuffix(msg, hint), "got %q", msg)

			list, problems, err := s.List(job)
			require.NoError(t, err)
			if tt.listed {
				assert.Len(t, list, 1)
				assert.Empty(t, problems)
			} else {
				assert.Empty(t, list)
				require.Len(t, problems, 1)
				assert.Contains(t, problems[0], tt.want)
			}
			_, _, skipped, err := s.Latest(job)
			assert.ErrorIs(t, err, ErrCorrupt)
			require.Len(t, skipped, 1)
			assert.Contains(t, skipped[0], tt.want)
		})
	}
}

func TestExactErrorMessage(t *testing.T) {
	s := openTestStore(t)
	for range 3 {
		commit(t, s, "4f2a", Owner{1000, 1000}, defaultPods())
	}
	p := filepath.Join(s.Root(), "4f2a", "ckpt-0003", "rank1", "pages-1.img")
	require.NoError(t, os.WriteFile(p, []byte("pages of rank 2"), 0o600))
	_, _, err := s.Load("4f2a", "ckpt-0003")
	require.EqualError(t, err, "checkpoint ckpt-0003 of job 4f2a: file rank1/pages-1.img: checksum mismatch: the image was altered or corrupted; "+
		"restore another checkpoint with --checkpoint ID (see cruz checkpoints 4f2a)")

	// Several problems: the first by file name is named, the rest counted.
	require.NoError(t, os.WriteFile(filepath.Join(s.Root(), "4f2a", "ckpt-0002", "rank0", "x"), nil, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(s.Root(), "4f2a", "ckpt-0002", "rank1", "y"), nil, 0o600))
	_, _, err = s.Load("4f2a", "ckpt-0002")
	require.ErrorContains(t, err, "file rank0/x: not in the manifest: a file was added to the checkpoint after it was taken (and 1 more problem); restore")
}

func TestMovedCheckpointRejected(t *testing.T) {
	s := openTestStore(t)
	commit(t, s, "job1", Owner{1000, 1000}, defaultPods())
	jobDir := filepath.Join(s.Root(), "job1")
	// Signed manifests are bound to their id and job: renaming a checkpoint,
	// or moving it to another job, is detected.
	require.NoError(t, exec.Command("cp", "-a", filepath.Join(jobDir, "ckpt-0001"), filepath.Join(jobDir, "ckpt-0009")).Run())
	_, _, err := s.Load("job1", "ckpt-0009")
	require.ErrorIs(t, err, ErrCorrupt)
	assert.Contains(t, err.Error(), "checkpoint ckpt-0009 of job job1: file manifest.json: the manifest is that of checkpoint ckpt-0001 of job job1: the checkpoint directory was copied or renamed")

	require.NoError(t, os.MkdirAll(filepath.Join(s.Root(), "job2"), 0o700))
	require.NoError(t, exec.Command("cp", "-a", filepath.Join(jobDir, "ckpt-0001"), filepath.Join(s.Root(), "job2", "ckpt-0001")).Run())
	list, problems, err := s.List("job2")
	require.NoError(t, err)
	assert.Empty(t, list)
	require.Len(t, problems, 1)
	assert.Contains(t, problems[0], "the manifest is that of checkpoint ckpt-0001 of job job1")

	// A manifest signed with another key.
	other, err := Open(s.Root(), []byte("another cluster key, 32 bytes.."))
	require.NoError(t, err)
	_, _, err = other.Load("job1", "ckpt-0001")
	assert.ErrorContains(t, err, "file manifest.json: signature mismatch")
}

func TestLatestSkipsCorruptNewest(t *testing.T) {
	s := openTestStore(t)
	const job = "job1"
	_, _, _, err := s.Latest(job)
	require.ErrorIs(t, err, ErrNotFound)
	assert.EqualError(t, err, "job job1 has no checkpoints: checkpoint not found")

	for range 3 {
		commit(t, s, job, Owner{1000, 1000}, defaultPods())
	}
	dir := func(id string) string { return filepath.Join(s.Root(), job, id) }

	m, d, skipped, err := s.Latest(job)
	require.NoError(t, err)
	assert.Equal(t, "ckpt-0003", m.ID)
	assert.Equal(t, dir("ckpt-0003"), d)
	assert.Empty(t, skipped)

	// The newest has a corrupted image.
	require.NoError(t, os.WriteFile(filepath.Join(dir("ckpt-0003"), "rank0", "pages-1.img"), []byte("pages of rank 9"), 0o600))
	m, d, skipped, err = s.Latest(job)
	require.NoError(t, err)
	assert.Equal(t, "ckpt-0002", m.ID)
	assert.Equal(t, dir("ckpt-0002"), d)
	require.Len(t, skipped, 1)
	assert.Contains(t, skipped[0], "checkpoint ckpt-0003 of job job1: file rank0/pages-1.img: checksum mismatch")

	// The next one has a forged manifest: List already leaves it out.
	editManifest(t, dir("ckpt-0002"), func(m map[string]any) { m["stopped"] = true })
	list, problems, err := s.List(job)
	require.NoError(t, err)
	require.Len(t, list, 2)
	assert.Equal(t, "ckpt-0001", list[0].ID)
	assert.Equal(t, "ckpt-0003", list[1].ID)
	require.Len(t, problems, 1)
	assert.Contains(t, problems[0], "checkpoint ckpt-0002 of job job1: file manifest.json: signature mismatch")

	m, _, skipped, err = s.Latest(job)
	require.NoError(t, err)
	assert.Equal(t, "ckpt-0001", m.ID)
	require.Len(t, skipped, 2)
	assert.Contains(t, skipped[0], "ckpt-0003")
	assert.Contains(t, skipped[1], "ckpt-0002")

	// None verifies.
	require.NoError(t, os.Remove(filepath.Join(dir("ckpt-0001"), "rank1", "core-1.img")))
	m, d, skipped, err = s.Latest(job)
	require.ErrorIs(t, err, ErrCorrupt)
	assert.Nil(t, m)
	assert.Empty(t, d)
	assert.Len(t, skipped, 3)
	assert.Contains(t, err.Error(), "job job1: none of its 3 checkpoints verifies")
	assert.Contains(t, err.Error(), "checkpoint ckpt-0001 of job job1: file rank1/core-1.img: missing")
}

func TestIDsSequentialNotReused(t *testing.T) {
	s := openTestStore(t)
	owner := Owner{1000, 1000}
	next := func(st *Store) *Pending {
		p, err := st.Begin("job1", owner)
		require.NoError(t, err)
		return p
	}

	p1 := next(s)
	assert.Equal(t, "ckpt-0001", p1.ID())
	writePods(t, p1, defaultPods())
	_, err := p1.Commit(manifestFor(defaultPods()))
	require.NoError(t, err)

	p2 := next(s)
	assert.Equal(t, "ckpt-0002", p2.ID())
	_, err = p2.PodDir("rank0")
	require.NoError(t, err)
	require.NoError(t, p2.Abort())
	require.NoError(t, p2.Abort()) // idempotent
	_, err = p2.Commit(manifestFor(defaultPods()))
	assert.ErrorContains(t, err, "checkpoint ckpt-0002 of job job1 was already aborted")
	_, err = p2.PodDir("rank1")
	assert.ErrorContains(t, err, "already aborted")
	assert.NotContains(t, entries(t, filepath.Join(s.Root(), "job1")), ".tmp-ckpt-0002")

	p3 := next(s)
	assert.Equal(t, "ckpt-0003", p3.ID(), "the aborted number must not be reused")
	writePods(t, p3, defaultPods())
	_, err = p3.Commit(manifestFor(defaultPods()))
	require.NoError(t, err)
	_, err = p3.Commit(manifestFor(defaultPods()))
	assert.ErrorContains(t, err, "already committed")

	// After a restart, and after deleting the newest checkpoint.
	s2 := reopen(t, s)
	require.NoError(t, s2.Delete("job1", "ckpt-0003", owner))
	p4 := next(s2)
	assert.Equal(t, "ckpt-0004", p4.ID())
	require.NoError(t, p4.Abort())

	list, _, err := s2.List("job1")
	require.NoError(t, err)
	var ids []string
	for _, m := range list {
		ids = append(ids, m.ID)
	}
	assert.Equal(t, []string{"ckpt-0001"}, ids)

	// Beyond 9999 the number just grows.
	require.NoError(t, os.WriteFile(filepath.Join(s.Root(), "job1", ".seq"), []byte("9999\n"), 0o600))
	p5 := next(s2)
	assert.Equal(t, "ckpt-10000", p5.ID())
	require.NoError(t, p5.Abort())
	assert.Equal(t, 10000, parseID("ckpt-10000"))
}

func TestConcurrentBeginGivesDistinctIDs(t *testing.T) {
	s := openTestStore(t)
	s2 := reopen(t, s) // as if another process
	const n = 16
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		st := s
		if i%2 == 1 {
			st = s2
		}
		wg.Go(func() {
			p, err := st.Begin("job1", Owner{1000, 1000})
			if !assert.NoError(t, err) {
				return
			}
			ids[i] = p.ID()
			writePods(t, p, podFiles{"r": {"f": fmt.Sprint(i)}})
			m := manifestFor(podFiles{"r": nil})
			_, err = p.Commit(m)
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	sort.Strings(ids)
	for i, id := range ids {
		assert.Equal(t, formatID(i+1), id)
	}
	list, problems, err := s.List("job1")
	require.NoError(t, err)
	assert.Empty(t, problems)
	assert.Len(t, list, n)
}

func TestCommitErrorsRemoveTemp(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, p *Pending) *Manifest
		want  string
	}{
		{
			name: "pod without PodDir",
			setup: func(t *testing.T, p *Pending) *Manifest {
				writePods(t, p, podFiles{"rank0": {"a": "a"}})
				return manifestFor(podFiles{"rank0": nil, "rank1": nil})
			},
			want: "pod rank1 is in the manifest but has no image directory (PodDir was not called for it)",
		},
		{
			name: "PodDir not in manifest",
			setup: func(t *testing.T, p *Pending) *Manifest {
				writePods(t, p, podFiles{"rank0": {"a": "a"}, "rank1": {"b": "b"}})
				return manifestFor(podFiles{"rank0": nil})
			},
			want: `holds "rank1", which is not the directory of a pod listed in the manifest`,
		},
		{
			name: "stray file beside the pods",
			setup: func(t *testing.T, p *Pending) *Manifest {
				writePods(t, p, podFiles{"rank0": {"a": "a"}})
				dir, err := p.PodDir("rank0")
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(dir), "dump.log"), nil, 0o600))
				return manifestFor(podFiles{"rank0": nil})
			},
			want: `holds "dump.log"`,
		},
		{
			name: "pod listed twice",
			setup: func(t *testing.T, p *Pending) *Manifest {
				writePods(t, p, podFiles{"rank0": {"a": "a"}})
				m := manifestFor(podFiles{"rank0": nil})
				m.Pods = append(m.Pods, m.Pods[0])
				return m
			},
			want: "pod rank0 is listed twice",
		},
		{
			name: "no pods",
			setup: func(t *testing.T, p *Pending) *Manifest {
				return &Manifest{}
			},
			want: "the manifest lists no pods",
		},
		{
			name: "nil manifest",
			setup: func(t *testing.T, p *Pending) *Manifest {
				return nil
			},
			want: "nil manifest",
		},
		{
			name: "symlink in a pod",
			setup: func(t *testing.T, p *Pending) *Manifest {
				writePods(t, p, podFiles{"rank0": {"a": "a"}})
				dir, err := p.PodDir("rank0")
				require.NoError(t, err)
				require.NoError(t, os.Symlink("/etc/shadow", filepath.Join(dir, "parent")))
				return manifestFor(podFiles{"rank0": nil})
			},
			want: "pod rank0: parent: is a symbolic link",
		},
		{
			name: "bad spec",
			setup: func(t *testing.T, p *Pending) *Manifest {
				writePods(t, p, podFiles{"rank0": {"a": "a"}})
				m := manifestFor(podFiles{"rank0": nil})
				m.Spec = json.RawMessage(`{"unterminated`)
				return m
			},
			want: "job spec is not valid JSON",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTestStore(t)
			p, err := s.Begin("job1", Owner{1000, 1000})
			require.NoError(t, err)
			m := tt.setup(t, p)
			_, err = p.Commit(m)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "checkpoint ckpt-0001 of job job1: commit failed, nothing was saved: ")
			assert.Contains(t, err.Error(), tt.want)
			assert.Equal(t, []string{".owner", ".seq"}, entries(t, filepath.Join(s.Root(), "job1")))
			assert.NoError(t, p.Abort())
			list, problems, err := s.List("job1")
			require.NoError(t, err)
			assert.Empty(t, list)
			assert.Empty(t, problems)
		})
	}
}

func TestBadIDsRejected(t *testing.T) {
	s := openTestStore(t)
	commit(t, s, "job1", Owner{1000, 1000}, defaultPods())
	outside := filepath.Join(filepath.Dir(s.Root()), "escape")

	badJobs := []string{"", ".", "..", "../escape", "a/b", "/abs", ".tmp-ckpt-0001", ".hidden",
		"-flag", "a b", "x\x00y", "job\n", strings.Repeat("a", 129)}
	for _, job := range badJobs {
		t.Run("job "+job, func(t *testing.T) {
			want := fmt.Sprintf("invalid job id %q: ", job)
			_, err := s.Begin(job, Owner{1000, 1000})
			assertInvalid(t, err, want)
			_, _, err = s.List(job)
			assertInvalid(t, err, want)
			_, _, err = s.Load(job, "ckpt-0001")
			assertInvalid(t, err, want)
			_, _, _, err = s.Latest(job)
			assertInvalid(t, err, want)
			assertInvalid(t, s.Delete(job, "ckpt-0001", Owner{1000, 1000}), want)
			assertInvalid(t, s.DeleteJob(job, Owner{1000, 1000}), want)
			if job != "" {
				_, err = s.CleanTemp(job)
				assertInvalid(t, err, want)
			}
		})
	}
	badIDs := []string{"", "ckpt-1", "ckpt-001", "../ckpt-0001", "ckpt-0001/..", "ckpt-0001/",
		".tmp-ckpt-0001", "ckpt-00a1", "CKPT-0001", "ckpt-0001 ", "ckpt-1234567890", "..", "."}
	for _, id := range badIDs {
		t.Run("checkpoint "+id, func(t *testing.T) {
			want := fmt.Sprintf("invalid checkpoint id %q: expected the form ckpt-NNNN", id)
			_, _, err := s.Load("job1", id)
			assertInvalid(t, err, want)
			assertInvalid(t, s.Verify("job1", id), want)
			assertInvalid(t, s.Delete("job1", id, Owner{1000, 1000}), want)
		})
	}
	p, err := s.Begin("job1", Owner{1000, 1000})
	require.NoError(t, err)
	defer p.Abort()
	for _, pod := range []string{"", ".", "..", ".hidden", "a/b", "../x", "manifest.json", "x\x00", strings.Repeat("p", 256)} {
		_, err := p.PodDir(pod)
		assertInvalid(t, err, fmt.Sprintf("invalid pod name %q: ", pod))
	}
	for _, ok := range []string{"rank0", "launcher", "node-1.rank_2", "a..b"} {
		_, err := p.PodDir(ok)
		assert.NoError(t, err, ok)
	}
	_, err = os.Lstat(outside)
	assert.ErrorIs(t, err, os.ErrNotExist, "nothing may be created outside the root")
	list, _, err := s.List("job1")
	require.NoError(t, err)
	assert.Len(t, list, 1, "nothing may be deleted")
}

func assertInvalid(t *testing.T, err error, want string) {
	t.Helper()
	if assert.Error(t, err) {
		assert.ErrorIs(t, err, ErrInvalidID)
		assert.True(t, strings.HasPrefix(err.Error(), want), "got %q, want prefix %q", err.Error(), want)
	}
}

func TestOpen(t *testing.T) {
	base := t.TempDir()
	t.Run("relative path", func(t *testing.T) {
		_, err := Open("var/lib/cruz", testKey)
		assert.ErrorContains(t, err, `checkpoint store root "var/lib/cruz" is not an absolute path`)
		_, err = Open("", testKey)
		assert.ErrorContains(t, err, "not an absolute path")
	})
	t.Run("short key", func(t *testing.T) {
		_, err := Open(filepath.Join(base, "k"), []byte("short"))
		assert.ErrorContains(t, err, "cluster key is 5 bytes, need at least 16")
	})
	t.Run("creates root 0711", func(t *testing.T) {
		root := filepath.Join(base, "a", "b", "ckpts")
		s, err := Open(root+"/", testKey)
		require.NoError(t, err)
		assert.Equal(t, root, s.Root())
		fi, err := os.Stat(root)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o711), fi.Mode().Perm())
		_, err = Open(root, testKey) // again: fine
		require.NoError(t, err)
	})
	t.Run("writable root refused", func(t *testing.T) {
		root := filepath.Join(base, "open")
		require.NoError(t, os.Mkdir(root, 0o777))
		require.NoError(t, os.Chmod(root, 0o777))
		_, err := Open(root, testKey)
		assert.ErrorContains(t, err, "is writable by group or others (mode 0777)")
		assert.ErrorContains(t, err, "chmod 711 "+root)
	})
	t.Run("not a directory", func(t *testing.T) {
		root := filepath.Join(base, "file")
		require.NoError(t, os.WriteFile(root, nil, 0o600))
		_, err := Open(root, testKey)
		assert.ErrorContains(t, err, "is not a directory")
	})
	t.Run("foreign owner refused", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("SKIPPED: needs root to chown the root directory to another uid")
		}
		root := filepath.Join(base, "foreign")
		require.NoError(t, os.Mkdir(root, 0o711))
		require.NoError(t, os.Chown(root, 4321, 4321))
		_, err := Open(root, testKey)
		assert.ErrorContains(t, err, "is owned by uid 4321")
		assert.ErrorContains(t, err, "chown root:root")
	})
}

func TestDeleteAndDeleteJob(t *testing.T) {
	s := openTestStore(t)
	for range 2 {
		commit(t, s, "job1", Owner{1000, 1000}, defaultPods())
	}
	require.NoError(t, s.Delete("job1", "ckpt-0001", Owner{1000, 1000}))
	list, _, err := s.List("job1")
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, "ckpt-0002", list[0].ID)
	assert.ElementsMatch(t, []string{".owner", ".seq", "ckpt-0002"}, entries(t, filepath.Join(s.Root(), "job1")))

	err = s.Delete("job1", "ckpt-0001", Owner{1000, 1000})
	require.ErrorIs(t, err, ErrNotFound)
	assert.EqualError(t, err, "checkpoint ckpt-0001 of job job1: no such checkpoint; list the job's checkpoints with cruz checkpoints job1")
	_, _, err = s.Load("job1", "ckpt-0001")
	assert.ErrorIs(t, err, ErrNotFound)

	// Not while a checkpoint of the job is being written.
	p, err := s.Begin("job1", Owner{1000, 1000})
	require.NoError(t, err)
	assert.ErrorContains(t, s.DeleteJob("job1", Owner{1000, 1000}), "delete job job1: checkpoint ckpt-0003 is being written; abort it first")
	require.NoError(t, p.Abort())

	require.NoError(t, s.DeleteJob("job1", Owner{1000, 1000}))
	assert.Equal(t, []string{".cruz-store"}, entries(t, s.Root()), "nothing but the layout marker")
	list, problems, err := s.List("job1")
	require.NoError(t, err)
	assert.Empty(t, list)
	assert.Empty(t, problems)
	require.NoError(t, s.DeleteJob("job1", Owner{1000, 1000})) // nothing to do
	require.NoError(t, s.DeleteJob("never-existed", Owner{1000, 1000}))
}

func TestCreatedKeptAndUTC(t *testing.T) {
	s := openTestStore(t)
	p, err := s.Begin("job1", Owner{1000, 1000})
	require.NoError(t, err)
	writePods(t, p, defaultPods())
	m := manifestFor(defaultPods())
	when := time.Date(2025, 3, 4, 5, 6, 7, 890, time.FixedZone("X", 3600))
	m.Created = when
	m.Phases["commit"] = 77
	_, err = p.Commit(m)
	require.NoError(t, err)
	assert.True(t, when.Equal(m.Created))
	assert.Equal(t, time.UTC, m.Created.Location())
	assert.Equal(t, int64(77), m.Phases["commit"], "a caller's commit phase is kept")
	loaded, _, err := s.Load("job1", m.ID)
	require.NoError(t, err)
	assert.True(t, when.Equal(loaded.Created))
}
