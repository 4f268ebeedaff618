package store

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Pods of one checkpoint are dumped by the agents of several nodes into the
// one shared store: the coordinator begins the checkpoint and makes every
// pod's directory (PodDir), each node's agent finds its pods' directories
// with PendingPodDir, and the coordinator commits once all are written.
// A live migration moves one pod's images the same way, through a transfer:
// a temporary directory that is never committed, only aborted.

const xferPrefix = "xfer-"

var (
	xferIDRe    = regexp.MustCompile(`^xfer-[0-9a-f]{16}$`)
	errTransfer = errors.New("a transfer is never committed; Abort it once its images are restored")
)

// BeginTransfer starts a temporary image directory for job (for a migration)
// with the permissions of a checkpoint; it can only be aborted.
func (s *Store) BeginTransfer(job string, owner Owner) (*Pending, error) {
	if err := ValidateJobID(job); err != nil {
		return nil, err
	}
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	id := xferPrefix + hex.EncodeToString(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	pm := newPerms(owner, s.root)
	jobDir, err := s.ensureJobDir(job, pm)
	if err != nil {
		return nil, err
	}
	tmp := filepath.Join(jobDir, tmpPrefix+id)
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("job %s: create transfer directory: %w", job, err)
	}
	if err := fixRootDir(tmp); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("job %s: %w", job, err)
	}
	s.active[tmp] = true
	return &Pending{s: s, job: job, owner: owner, id: id, jobDir: jobDir, tmp: tmp, perms: pm,
		pods: map[string]string{}}, nil
}

// ValidatePendingID checks the id of a checkpoint being written or of a
// transfer, as another node's agent receives it.
func ValidatePendingID(id string) error {
	if ckptIDRe.MatchString(id) || xferIDRe.MatchString(id) {
		return nil
	}
	return &idError{"pending checkpoint id", id, "expected ckpt-NNNN or xfer-<16 hex digits>"}
}

// PendingPodDir returns the image directory of pod in the checkpoint (or
// transfer) id of job that another agent began and made the directory of.
// It must be a real directory, not a symlink: the agent writing into it is
// root, and the path is built here, never taken from a request.
func (s *Store) PendingPodDir(job, id, pod string) (string, error) {
	if err := ValidateJobID(job); err != nil {
		return "", err
	}
	if err := ValidatePendingID(id); err != nil {
		return "", err
	}
	if err := ValidatePodName(pod); err != nil {
		return "", err
	}
	dir := filepath.Join(s.jobDir(job), tmpPrefix+id, pod)
	f, err := openDir(dir)
	if err != nil {
		return "", fmt.Errorf("checkpoint %s of job %s: pod directory %s: %w (was the checkpoint aborted?)", id, job, pod, err)
	}
	f.Close()
	return dir, nil
}

// TransferDir is the directory of a transfer's images, for a restore.
func (s *Store) TransferDir(job, id string) (string, error) {
	if err := ValidateJobID(job); err != nil {
		return "", err
	}
	if !xferIDRe.MatchString(id) {
		return "", &idError{"transfer id", id, "expected xfer-<16 hex digits>"}
	}
	return filepath.Join(s.jobDir(job), tmpPrefix+id), nil
}

// CleanDeleted finishes deletions that an interrupted process left (hidden
// .del- entries, in the root and in every job). Unlike half-written
// checkpoints these are safe to remove whoever made them: a deletion is
// decided once the entry is renamed.
func (s *Store) CleanDeleted() (int, error) {
	removed := 0
	var errs []error
	dirs := []string{s.root}
	entries, err := os.ReadDir(s.root)
	if err != nil {
		return 0, fmt.Errorf("clean %s: %w", s.root, err)
	}
	for _, e := range entries {
		if e.IsDir() && ValidateJobID(e.Name()) == nil {
			dirs = append(dirs, filepath.Join(s.root, e.Name()))
		}
	}
	for _, dir := range dirs {
		list, _ := os.ReadDir(dir)
		for _, e := range list {
			if !strings.HasPrefix(e.Name(), delPrefix) {
				continue
			}
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				errs = append(errs, err)
				continue
			}
			removed++
		}
	}
	return removed, errors.Join(errs...)
}
