package store

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Usage measures the store: the bytes of every file under its root (every
// job's checkpoints, complete or being written) and the bytes its
// filesystem has free for root. Files that vanish during the walk (a
// checkpoint deleted meanwhile) are skipped.
func (s *Store) Usage() (used, free int64, err error) {
	err = filepath.WalkDir(s.root, func(_ string, d fs.DirEntry, err error) error {
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
		used += info.Size()
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("measure the checkpoint store %s: %w", s.root, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(s.root, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", s.root, err)
	}
	return used, int64(st.Bfree) * st.Bsize, nil
}
