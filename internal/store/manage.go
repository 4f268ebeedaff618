package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

type listed struct {
	num int
	id  string
	m   *Manifest // nil if err != nil
	err error
}

// scan reads every complete (final-named) checkpoint of job, oldest first,
// checking manifests only.
func (s *Store) scan(job string) ([]listed, error) {
	if err := ValidateJobID(job); err != nil {
		return nil, err
	}
	jobDir := s.jobDir(job)
	entries, err := os.ReadDir(jobDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("job %s: %w", job, err)
	}
	var out []listed
	for _, e := range entries {
		n := parseID(e.Name())
		if n < 0 {
			continue // temporary, being deleted, .seq, or foreign
		}
		m, err := s.readManifest(job, e.Name(), filepath.Join(jobDir, e.Name()))
		out = append(out, listed{num: n, id: e.Name(), m: m, err: err})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].num < out[j].num })
	return out, nil
}

// List returns the complete checkpoints of job whose manifests are authentic,
// oldest first, and one message per checkpoint skipped because its manifest
// is missing, unreadable or forged. Image files are not checked (see Load).
// A job without checkpoints gives no error.
func (s *Store) List(job string) ([]Manifest, []string, error) {
	ls, err := s.scan(job)
	if err != nil {
		return nil, nil, err
	}
	var ms []Manifest
	var problems []string
	for _, l := range ls {
		if l.err != nil {
			problems = append(problems, l.err.Error())
			continue
		}
		ms = append(ms, *l.m)
	}
	return ms, problems, nil
}

// Load fully verifies checkpoint id of job (manifest signature, and every
// file: no missing, no extra, regular files only, sizes and SHA-256) and
// returns its manifest and directory. Errors are *CheckpointError wrapping
// ErrNotFound or ErrCorrupt, or ErrInvalidID for a malformed id.
func (s *Store) Load(job, id string) (*Manifest, string, error) {
	if err := ValidateJobID(job); err != nil {
		return nil, "", err
	}
	if err := ValidateCheckpointID(id); err != nil {
		return nil, "", err
	}
	dir := filepath.Join(s.jobDir(job), id)
	m, err := s.readManifest(job, id, dir)
	if err != nil {
		return nil, "", err
	}
	if err := s.verifyTree(m, dir); err != nil {
		return nil, "", err
	}
	return m, dir, nil
}

// Verify is Load without the results.
func (s *Store) Verify(job, id string) error {
	_, _, err := s.Load(job, id)
	return err
}

// Latest returns the newest checkpoint of job that fully verifies, its
// directory, and a message for each newer checkpoint it skipped, newest
// first. With no checkpoint at all the error wraps ErrNotFound; when none
// verifies it wraps ErrCorrupt and lists the reasons.
func (s *Store) Latest(job string) (*Manifest, string, []string, error) {
	ls, err := s.scan(job)
	if err != nil {
		return nil, "", nil, err
	}
	var skipped []string
	for i := len(ls) - 1; i >= 0; i-- {
		l := ls[i]
		if l.err == nil {
			dir := filepath.Join(s.jobDir(job), l.id)
			if l.err = s.verifyTree(l.m, dir); l.err == nil {
				return l.m, dir, skipped, nil
			}
		}
		skipped = append(skipped, l.err.Error())
	}
	if len(ls) == 0 {
		return nil, "", nil, fmt.Errorf("job %s has no checkpoints: %w", job, ErrNotFound)
	}
	return nil, "", skipped, fmt.Errorf("job %s: none of its %d checkpoints verifies: %w: %s",
		job, len(ls), ErrCorrupt, strings.Join(skipped, "; "))
}

// Delete removes checkpoint id of job, which must be owner's (else an
// *OwnerError, ErrOwner). It is first renamed to a hidden name, so a crash
// midway never leaves a half-deleted checkpoint that List shows.
func (s *Store) Delete(job, id string, owner Owner) error {
	if err := ValidateJobID(job); err != nil {
		return err
	}
	if err := ValidateCheckpointID(id); err != nil {
		return err
	}
	if err := s.checkOwner(job, owner); err != nil {
		return fmt.Errorf("delete checkpoint %s: %w", id, err)
	}
	jobDir := s.jobDir(job)
	dir := filepath.Join(jobDir, id)
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return &CheckpointError{Job: job, ID: id, Problem: "no such checkpoint", Kind: ErrNotFound}
	}
	del := filepath.Join(jobDir, delPrefix+id)
	if err := os.RemoveAll(del); err != nil {
		return fmt.Errorf("delete checkpoint %s of job %s: %w", id, job, err)
	}
	if err := os.Rename(dir, del); err != nil {
		return fmt.Errorf("delete checkpoint %s of job %s: %w", id, job, err)
	}
	if err := syncDir(jobDir); err != nil {
		return fmt.Errorf("delete checkpoint %s of job %s: %w", id, job, err)
	}
	if err := os.RemoveAll(del); err != nil {
		return fmt.Errorf("delete checkpoint %s of job %s: %w (cruzd removes the rest at start; see CleanTemp)", id, job, err)
	}
	return nil
}

// DeleteJob removes every checkpoint of job (nothing to do if it has none),
// which must be owner's (else an *OwnerError, ErrOwner). It refuses while a
// checkpoint of the job is being written through s.
func (s *Store) DeleteJob(job string, owner Owner) error {
	if err := ValidateJobID(job); err != nil {
		return err
	}
	jobDir := s.jobDir(job)
	s.mu.Lock()
	if err := s.checkOwner(job, owner); err != nil { // under s.mu: no Begin of s meanwhile
		s.mu.Unlock()
		return fmt.Errorf("delete the checkpoints: %w", err)
	}
	for dir := range s.active {
		if filepath.Dir(dir) == jobDir {
			s.mu.Unlock()
			return fmt.Errorf("delete job %s: checkpoint %s is being written; abort it first",
				job, strings.TrimPrefix(filepath.Base(dir), tmpPrefix))
		}
	}
	del, err := s.hideJob(job, jobDir) // under s.mu: keeps Begin out meanwhile
	s.mu.Unlock()
	if err != nil || del == "" {
		return err
	}
	if err := os.RemoveAll(del); err != nil {
		return fmt.Errorf("delete job %s: %w (cruzd removes the rest at start; see CleanTemp)", job, err)
	}
	return nil
}

// CleanTemp removes what interrupted commits, aborts and deletions left
// behind in job, or in every job if job is "". Checkpoints being written
// through s are left alone; other processes' are not, so call it when no
// other cruzd writes to the same jobs (at start). It returns how many
// entries it removed.
func (s *Store) CleanTemp(job string) (removed int, err error) {
	if job != "" {
		if err := ValidateJobID(job); err != nil {
			return 0, err
		}
		return s.cleanDir(s.jobDir(job))
	}
	entries, err := os.ReadDir(s.root)
	if err != nil {
		return 0, fmt.Errorf("clean %s: %w", s.root, err)
	}
	var errs []error
	n, err := s.cleanDir(s.root) // deleted jobs
	removed += n
	errs = append(errs, err)
	for _, e := range entries {
		if e.IsDir() && ValidateJobID(e.Name()) == nil {
			n, err := s.cleanDir(filepath.Join(s.root, e.Name()))
			removed += n
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}

// hideJob renames the job directory to a hidden name in the root, which
// CleanTemp removes; "" if the job has no directory.
func (s *Store) hideJob(job, jobDir string) (string, error) {
	if _, err := os.Lstat(jobDir); errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	del := filepath.Join(s.root, delPrefix+job+"."+strconv.FormatInt(time.Now().UnixNano(), 10))
	if err := os.Rename(jobDir, del); err != nil {
		return "", fmt.Errorf("delete job %s: %w", job, err)
	}
	if err := syncDir(s.root); err != nil {
		return "", fmt.Errorf("delete job %s: %w", job, err)
	}
	return del, nil
}

func (s *Store) cleanDir(dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("clean %s: %w", dir, err)
	}
	removed := 0
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, tmpPrefix) && !strings.HasPrefix(name, delPrefix) && !isOwnerTemp(name) && !isLayoutTemp(name) {
			continue
		}
		p := filepath.Join(dir, name)
		if s.isActive(p) {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, fmt.Errorf("clean %s: %w", p, err))
			continue
		}
		removed++
	}
	if removed > 0 {
		errs = append(errs, syncDir(dir))
	}
	return removed, errors.Join(errs...)
}

// JobFile returns the path of a file of job's own in its directory (created,
// with the owner's permissions, if needed), such as the output log of a job
// that may be resumed by an agent on another node. name is a plain file
// name that is not a checkpoint's, a temporary or a deleted entry's.
func (s *Store) JobFile(job string, owner Owner, name string) (string, error) {
	if err := ValidateJobID(job); err != nil {
		return "", err
	}
	if name == "" || name != filepath.Base(name) || name == "." || name == ".." || parseID(name) >= 0 ||
		strings.HasPrefix(name, tmpPrefix) || strings.HasPrefix(name, delPrefix) || strings.HasPrefix(name, ".") {
		return "", fmt.Errorf("job %s: %q is not a name for a job's file", job, name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dir, err := s.ensureJobDir(job, newPerms(owner, s.root))
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, name), nil
}

// Jobs lists the jobs that have a directory in the store (with or without
// complete checkpoints), sorted; entries that are no job's are skipped.
func (s *Store) Jobs() ([]string, error) {
	entries, err := os.ReadDir(s.root)
	if err != nil {
		return nil, fmt.Errorf("list the jobs of store %s: %w", s.root, err)
	}
	var jobs []string
	for _, e := range entries {
		if e.IsDir() && ValidateJobID(e.Name()) == nil {
			jobs = append(jobs, e.Name())
		}
	}
	return jobs, nil
}
