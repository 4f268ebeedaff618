package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Usage measures the store: the bytes of every file under its root (every
// job's checkpoints, complete or being written) and the bytes its
// filesystem has free for root. Files that vanish during the walk (a
// checkpoint deleted meanwhile) are skipped.
func (s *Store) Usage() (used, free int64, err error) {
	used, err = treeBytes(s.root)
	if err != nil {
		return 0, 0, fmt.Errorf("measure the checkpoint store %s: %w", s.root, err)
	}
	free, err = s.Free()
	if err != nil {
		return 0, 0, err
	}
	return used, free, nil
}

// Free is the bytes the store's filesystem has free for root.
func (s *Store) Free() (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(s.root, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", s.root, err)
	}
	return int64(st.Bfree) * st.Bsize, nil
}

// treeBytes adds up the sizes of the regular files under dir; files that
// vanish during the walk are skipped, a dir that does not exist holds 0.
func treeBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		n += info.Size()
		return nil
	})
	return n, err
}

// JobUsage is what one job's directory holds in the store.
type JobUsage struct {
	Job string
	// UID owns the job (and is charged for its bytes).
	UID uint32
	// Bytes counts every file of the job: its checkpoints, complete,
	// being written or being deleted, and its own files (JobFile), but not
	// its owner record.
	Bytes int64
	// Checkpoints is the number of its complete checkpoints.
	Checkpoints int
}

// JobsUsage measures every job's directory of the store, sorted by job.
// A job is charged to the user its owner record names (see pinOwner).
func (s *Store) JobsUsage() ([]JobUsage, error) {
	jobs, err := s.Jobs()
	if err != nil {
		return nil, err
	}
	out := make([]JobUsage, 0, len(jobs))
	for _, job := range jobs {
		u, err := s.jobUsage(job)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

// UserUsage is the bytes of the jobs of uid in the store. Only uid's job
// directories are walked (it runs before every checkpoint under a quota).
func (s *Store) UserUsage(uid uint32) (int64, error) {
	jobs, err := s.Jobs()
	if err != nil {
		return 0, err
	}
	var n int64
	for _, job := range jobs {
		u, err := s.jobUsageOf(job, &uid)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted meanwhile
		}
		if err != nil {
			return 0, err
		}
		if u.UID == uid {
			n += u.Bytes
		}
	}
	return n, nil
}

func (s *Store) jobUsage(job string) (JobUsage, error) { return s.jobUsageOf(job, nil) }

// jobUsageOf measures job's directory; with only set, a job of another
// owner is not walked (its Bytes stay 0).
func (s *Store) jobUsageOf(job string, only *uint32) (JobUsage, error) {
	dir := s.jobDir(job)
	u := JobUsage{Job: job}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return u, fmt.Errorf("measure job %s in the checkpoint store: %w", job, err)
	}
	for _, e := range entries {
		if parseID(e.Name()) >= 0 {
			u.Checkpoints++
		}
	}
	u.UID = s.jobOwner(job, dir)
	if only != nil && u.UID != *only {
		return u, nil
	}
	if u.Bytes, err = treeBytes(dir); err != nil {
		return u, fmt.Errorf("measure job %s in the checkpoint store: %w", job, err)
	}
	// The owner record is the store's, not charged to the owner.
	if fi, err := os.Lstat(filepath.Join(dir, ownerName)); err == nil && fi.Mode().IsRegular() {
		u.Bytes -= fi.Size()
	}
	return u, nil
}

// jobOwner is the uid a job directory belongs to (see JobsUsage): the one
// its owner record names, else (a directory of an earlier version) the one
// its checkpoints or its ACL show, else root.
func (s *Store) jobOwner(job, dir string) uint32 {
	if rec, err := readOwner(dir); err == nil {
		return rec.UID
	}
	o, _ := s.legacyOwner(job, dir)
	return o.UID
}

// Bytes is what the checkpoint has written so far.
func (p *Pending) Bytes() (int64, error) {
	return treeBytes(p.tmp)
}
