package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Every job directory has an owner record, .owner (0600 root), naming the
// user whose checkpoints it holds. It is written once, by the first writer
// of the directory, and never changes: a job id that two users end up with
// (a Slurm job id reused after slurmctld lost its state, a collision) can
// no longer hand one user's checkpoints to the other, whose writes, reads
// through the agent and deletions the store refuses. Before it, the
// directory's ACL followed whoever wrote last.

const (
	ownerName      = ".owner"
	ownerTmpPrefix = ".owner.tmp-"
	maxOwnerSize   = 4096
)

// ErrOwner: the job's directory in the store belongs to another user.
var ErrOwner = errors.New("the job's checkpoints belong to another user")

// OwnerError is a refusal to act on a job directory of another owner. Its
// message names the job and both users.
type OwnerError struct {
	Job string
	// Has is the user the job's directory belongs to, Not the one refused.
	Has, Not ownerRecord
}

func (e *OwnerError) Error() string {
	return fmt.Sprintf("job %s's checkpoints belong to %s, not %s", e.Job, e.Has, e.Not)
}

func (e *OwnerError) Is(target error) bool { return target == ErrOwner }

// ownerRecord is the content of .owner.
type ownerRecord struct {
	UID  uint32 `json:"uid"`
	GID  uint32 `json:"gid"`
	User string `json:"user,omitempty"` // for messages only
}

func (r ownerRecord) String() string {
	if r.User == "" {
		return fmt.Sprintf("uid %d", r.UID)
	}
	return fmt.Sprintf("%s (uid %d)", r.User, r.UID)
}

// recordOf names owner's user if the system knows it.
func recordOf(o Owner) ownerRecord {
	r := ownerRecord{UID: o.UID, GID: o.GID}
	if u, err := user.LookupId(strconv.FormatUint(uint64(o.UID), 10)); err == nil {
		r.User = u.Username
	}
	return r
}

// CheckOwner tells whether owner may write to job's directory in the store:
// nil if the job has none yet or it is owner's, an *OwnerError (ErrOwner)
// if it belongs to another user. A directory of an earlier version, without
// an owner record, gets one now (see pinOwner).
func (s *Store) CheckOwner(job string, owner Owner) error {
	if err := ValidateJobID(job); err != nil {
		return err
	}
	return s.checkOwner(job, owner)
}

// checkOwner is CheckOwner of a valid job id.
func (s *Store) checkOwner(job string, owner Owner) error {
	dir := s.jobDir(job)
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	_, err := s.pinOwner(job, dir, owner)
	return err
}

// pinOwner returns the owner record of job's directory dir, writing it if
// it has none: with the owner that a directory of an earlier version shows
// (its checkpoints' signed manifests, else its ACL), else with owner, who is
// then the directory's first writer. It fails with an *OwnerError if the
// record names another user than owner.
//
// The record is written to a temporary file and hard-linked to its name:
// link(2) never replaces, so of writers racing (agents of several nodes on
// a shared store) exactly one wins and the others read the winner's.
func (s *Store) pinOwner(job, dir string, owner Owner) (ownerRecord, error) {
	rec, err := readOwner(dir)
	// Again if the temporary record vanished before its link (a CleanTemp
	// of the job meanwhile).
	for try := 0; errors.Is(err, fs.ErrNotExist) && try < 3; try++ {
		want := owner
		if legacy, ok := s.legacyOwner(job, dir); ok {
			want = legacy
		}
		if err = writeOwner(dir, recordOf(want)); err == nil || errors.Is(err, fs.ErrNotExist) {
			rec, err = readOwner(dir)
		}
	}
	if err != nil {
		return ownerRecord{}, fmt.Errorf("job %s: owner record: %w", job, err)
	}
	if rec.UID != owner.UID {
		return rec, &OwnerError{Job: job, Has: rec, Not: recordOf(owner)}
	}
	return rec, nil
}

// writeOwner links a new owner record into dir unless it has one already.
func writeOwner(dir string, rec ownerRecord) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ownerTmpPrefix+"*") // 0600
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if os.Geteuid() == 0 {
		err = f.Chown(0, 0) // not the directory's group, whatever it is
	}
	if err == nil {
		_, err = f.Write(append(data, '\n'))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Link(tmp, filepath.Join(dir, ownerName)); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return syncDir(dir)
}

// readOwner reads the owner record of dir; fs.ErrNotExist if it has none.
// The record must be a regular root-owned file that only root can write.
func readOwner(dir string) (ownerRecord, error) {
	path := filepath.Join(dir, ownerName)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return ownerRecord{}, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ownerRecord{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.Mode().IsRegular() || !ok || int(st.Uid) != os.Geteuid() || fi.Mode().Perm()&0o022 != 0 {
		return ownerRecord{}, fmt.Errorf("%s is not a regular file of uid %d writable by it alone: remove the job's directory as root (cruz rm --checkpoints)", path, os.Geteuid())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxOwnerSize+1))
	if err != nil {
		return ownerRecord{}, fmt.Errorf("read %s: %w", path, err)
	}
	var rec ownerRecord
	if len(data) > maxOwnerSize {
		err = errors.New("too large")
	} else {
		err = json.Unmarshal(data, &rec)
	}
	if err != nil {
		return ownerRecord{}, fmt.Errorf("%s is malformed (%v): remove the job's directory as root (cruz rm --checkpoints)", path, err)
	}
	return rec, nil
}

// legacyOwner is the owner a job directory without an owner record (from
// an earlier version) shows: the one its newest authentic manifest names
// (signed, so the surest), else the user its ACL names (which that version
// set for the last writer). ok is false if it shows none.
func (s *Store) legacyOwner(job, dir string) (o Owner, ok bool) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return Owner{}, false
	}
	for i := len(entries) - 1; i >= 0; i-- {
		if parseID(entries[i].Name()) < 0 {
			continue
		}
		if m, err := s.readManifest(job, entries[i].Name(), filepath.Join(dir, entries[i].Name())); err == nil {
			return m.Owner, true
		}
	}
	if uid, ok := aclUserOf(dir); ok {
		o := Owner{UID: uid}
		if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
			if gid, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
				o.GID = uint32(gid)
			}
		}
		return o, true
	}
	return Owner{}, false
}

// aclUserOf is the user an access ACL of path grants rights to.
func aclUserOf(path string) (uint32, bool) {
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(path, aclXattrAccess, buf)
	if err != nil {
		return 0, false
	}
	es, err := decodeACL(buf[:n])
	if err != nil {
		return 0, false
	}
	for _, e := range es {
		if e.Tag == aclUser {
			return e.ID, true
		}
	}
	return 0, false
}

// isOwnerTemp tells a leftover of writeOwner (which cleanDir removes).
func isOwnerTemp(name string) bool { return strings.HasPrefix(name, ownerTmpPrefix) }
