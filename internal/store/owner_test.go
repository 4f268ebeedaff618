package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The test users of this machine (see FIELD-NOTES): the store runs as
// root, so it can write for them without switching users.
var (
	cruzt1 = Owner{UID: 1001, GID: 1002}
	cruzt2 = Owner{UID: 1002, GID: 1003}
)

const wrongOwner = "job slurm-5-0's checkpoints belong to cruzt2 (uid 1002), not cruzt1 (uid 1001)"

func requireOwnerError(t *testing.T, err error, want string) {
	t.Helper()
	require.ErrorIs(t, err, ErrOwner)
	var oe *OwnerError
	require.ErrorAs(t, err, &oe)
	assert.Contains(t, err.Error(), want)
}

// ownerFile reads the owner record of job and checks that it is root's, 0600.
func ownerFile(t *testing.T, s *Store, job string) ownerRecord {
	t.Helper()
	path := filepath.Join(s.Root(), job, ownerName)
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode(), "the owner record is root's alone")
	assert.Equal(t, uint32(os.Geteuid()), fi.Sys().(*syscall.Stat_t).Uid)
	rec, err := readOwner(filepath.Join(s.Root(), job))
	require.NoError(t, err)
	return rec
}

// A job id of cruzt2's (a Slurm job id that slurmctld hands out again,
// say) is not cruzt1's to write, read or delete: every path refuses,
// naming both users, and cruzt2's checkpoints stay as they were.
func TestJobDirBelongsToItsOwner(t *testing.T) {
	s := openTestStore(t)
	const job = "slurm-5-0"
	commit(t, s, job, cruzt2, defaultPods())
	commit(t, s, job, cruzt2, defaultPods())
	logPath, err := s.JobFile(job, cruzt2, "output.log")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(logPath, []byte("cruzt2's output\n"), 0o600))
	assert.Equal(t, ownerRecord{UID: 1002, GID: 1003, User: "cruzt2"}, ownerFile(t, s, job))

	_, err = s.Begin(job, cruzt1)
	requireOwnerError(t, err, wrongOwner)
	assert.EqualError(t, err, wrongOwner)
	_, err = s.BeginTransfer(job, cruzt1)
	requireOwnerError(t, err, wrongOwner)
	_, err = s.JobFile(job, cruzt1, "output.log")
	requireOwnerError(t, err, wrongOwner)
	requireOwnerError(t, s.Delete(job, "ckpt-0001", cruzt1), wrongOwner)
	assert.EqualError(t, s.DeleteJob(job, cruzt1), "delete the checkpoints: "+wrongOwner)
	requireOwnerError(t, s.CheckOwner(job, cruzt1), wrongOwner)
	// Another store on the same directory (another node's agent) too.
	_, err = reopen(t, s).Begin(job, cruzt1)
	requireOwnerError(t, err, wrongOwner)

	// Untouched: both checkpoints verify, the directory is still readable
	// by cruzt2 alone, nothing was left behind, the output is cruzt2's.
	list, problems, err := s.List(job)
	require.NoError(t, err)
	assert.Empty(t, problems)
	require.Len(t, list, 2)
	for _, m := range list {
		require.NoError(t, s.Verify(job, m.ID))
		assert.Equal(t, cruzt2, m.Owner)
	}
	uid, ok := aclUserOf(filepath.Join(s.Root(), job))
	require.True(t, ok)
	assert.Equal(t, uint32(1002), uid, "the directory's ACL still names cruzt2")
	assert.ElementsMatch(t, []string{".owner", ".seq", "ckpt-0001", "ckpt-0002", "output.log"}, entries(t, filepath.Join(s.Root(), job)))
	b, err := os.ReadFile(logPath)
	require.NoError(t, err)
	assert.Equal(t, "cruzt2's output\n", string(b))
	usage, err := s.UserUsage(1001)
	require.NoError(t, err)
	assert.Zero(t, usage, "nothing of the job is charged to cruzt1")

	// cruzt2 itself goes on as before.
	commit(t, s, job, cruzt2, defaultPods())
	require.NoError(t, s.Delete(job, "ckpt-0001", cruzt2))
	require.NoError(t, s.DeleteJob(job, cruzt2))
	assert.Equal(t, []string{".cruz-store"}, entries(t, s.Root()), "nothing but the layout marker")
	// Once gone, the job id is free for the next first writer.
	commit(t, s, job, cruzt1, defaultPods())
	assert.Equal(t, uint32(1001), ownerFile(t, s, job).UID)
}

// A job directory of an earlier version has no owner record: its owner is
// the one its signed manifests name (else its ACL's user), pinned on first
// use, and never the next writer.
func TestJobDirOwnerOfAnEarlierVersion(t *testing.T) {
	s := openTestStore(t)
	legacy := func(job string) string {
		dir := filepath.Join(s.Root(), job)
		require.NoError(t, os.Remove(filepath.Join(dir, ownerName)))
		return dir
	}

	// With checkpoints. Its ACL names cruzt1, as that version left it when
	// cruzt1 wrote last: the signed manifests win.
	commit(t, s, "slurm-5-0", cruzt2, defaultPods())
	dir := legacy("slurm-5-0")
	d, err := openDir(dir)
	require.NoError(t, err)
	require.NoError(t, newPerms(cruzt1, s.Root()).apply(d, true))
	d.Close()
	all, err := s.JobsUsage()
	require.NoError(t, err)
	require.Len(t, all, 1)
	assert.Equal(t, uint32(1002), all[0].UID, "charged to its manifests' owner")
	_, err = os.Lstat(filepath.Join(dir, ownerName))
	require.ErrorIs(t, err, os.ErrNotExist, "measuring pins nothing")
	_, err = s.Begin("slurm-5-0", cruzt1)
	requireOwnerError(t, err, wrongOwner)
	assert.Equal(t, ownerRecord{UID: 1002, GID: 1003, User: "cruzt2"}, ownerFile(t, s, "slurm-5-0"), "pinned at first use")
	commit(t, s, "slurm-5-0", cruzt2, defaultPods())

	// Without checkpoints (a Slurm step's output log only): its ACL's user.
	_, err = s.JobFile("slurm-6-0", cruzt2, "output.log")
	require.NoError(t, err)
	legacy("slurm-6-0")
	requireOwnerError(t, s.DeleteJob("slurm-6-0", cruzt1), "job slurm-6-0's checkpoints belong to cruzt2 (uid 1002), not cruzt1 (uid 1001)")
	assert.Equal(t, ownerRecord{UID: 1002, GID: 1003, User: "cruzt2"}, ownerFile(t, s, "slurm-6-0"), "the group is the user's primary one")

	// Showing no owner at all (e.g. root's own job, or one never written
	// to): its first writer's.
	require.NoError(t, os.Mkdir(filepath.Join(s.Root(), "slurm-7-0"), 0o700))
	commit(t, s, "slurm-7-0", cruzt1, defaultPods())
	assert.Equal(t, uint32(1001), ownerFile(t, s, "slurm-7-0").UID)
}

// Agents of several nodes (each its own Store on a shared directory) start
// the same new job id for two owners at once: exactly one owner gets it,
// every writer of the other is refused, and no temporary record is left.
func TestJobDirOwnerRace(t *testing.T) {
	s := openTestStore(t)
	const writers = 8
	stores := make([]*Store, writers)
	for i := range stores {
		stores[i] = reopen(t, s)
	}
	for round := range 10 {
		job := fmt.Sprintf("slurm-%d-0", 100+round)
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, writers)
		for i := range writers {
			owner := cruzt1
			if i%2 == 1 {
				owner = cruzt2
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				p, err := stores[i].Begin(job, owner)
				if err == nil {
					err = p.Abort()
				}
				errs[i] = err
			}()
		}
		close(start)
		wg.Wait()

		winner := ownerFile(t, s, job).UID
		require.Contains(t, []uint32{1001, 1002}, winner)
		for i, err := range errs {
			uid := uint32(1001 + i%2)
			if uid == winner {
				require.NoError(t, err, "round %d, writer %d (uid %d, the winner)", round, i, uid)
			} else {
				require.ErrorIs(t, err, ErrOwner, "round %d, writer %d (uid %d)", round, i, uid)
			}
		}
		for _, name := range entries(t, filepath.Join(s.Root(), job)) {
			assert.False(t, strings.HasPrefix(name, ownerTmpPrefix), "left behind: %s", name)
		}
		uid, ok := aclUserOf(filepath.Join(s.Root(), job))
		require.True(t, ok)
		assert.Equal(t, winner, uid, "the directory's ACL names the winner")
	}
}

func TestCheckOwner(t *testing.T) {
	s := openTestStore(t)
	require.NoError(t, s.CheckOwner("slurm-5-0", cruzt1), "a job without a directory is anyone's to start")
	_, err := os.Lstat(filepath.Join(s.Root(), "slurm-5-0"))
	require.ErrorIs(t, err, os.ErrNotExist, "checking makes nothing")
	require.ErrorIs(t, s.CheckOwner("../x", cruzt1), ErrInvalidID)

	commit(t, s, "slurm-5-0", cruzt2, defaultPods())
	require.NoError(t, s.CheckOwner("slurm-5-0", cruzt2))
	require.NoError(t, s.CheckOwner("slurm-5-0", Owner{UID: 1002, GID: 4242}), "the owner is the user, whatever its group")
	err = s.CheckOwner("slurm-5-0", cruzt1)
	requireOwnerError(t, err, wrongOwner)
	var oe *OwnerError
	require.True(t, errors.As(err, &oe))
	assert.Equal(t, "slurm-5-0", oe.Job)
	assert.Equal(t, uint32(1002), oe.Has.UID)
	assert.Equal(t, uint32(1001), oe.Not.UID)
	// Users the system does not know are named by uid; root by name.
	requireOwnerError(t, s.CheckOwner("slurm-5-0", Owner{UID: 4242}), "belong to cruzt2 (uid 1002), not uid 4242")
	commit(t, s, "root-job", Owner{}, defaultPods())
	requireOwnerError(t, s.CheckOwner("root-job", cruzt1), "job root-job's checkpoints belong to root (uid 0), not cruzt1 (uid 1001)")

	// A record that is not root's own regular file is not trusted (the
	// job directory is root's alone, so only a broken store has one).
	path := filepath.Join(s.Root(), "slurm-5-0", ownerName)
	require.NoError(t, os.Chown(path, 1001, 1002))
	err = s.CheckOwner("slurm-5-0", cruzt1)
	require.Error(t, err)
	assert.NotErrorIs(t, err, ErrOwner)
	assert.Contains(t, err.Error(), "is not a regular file of uid 0 writable by it alone")
	require.Error(t, s.CheckOwner("slurm-5-0", cruzt2), "not even for its rightful owner")
	require.NoError(t, os.Remove(path))
	require.NoError(t, os.Symlink("/etc/passwd", path))
	require.Error(t, s.CheckOwner("slurm-5-0", cruzt1))
	require.NoError(t, os.Remove(path))
	require.NoError(t, os.WriteFile(path, []byte("not json"), 0o600))
	err = s.CheckOwner("slurm-5-0", cruzt2)
	assert.ErrorContains(t, err, "is malformed")
}
