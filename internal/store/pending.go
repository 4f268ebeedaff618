package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

type pendingState int

const (
	stateOpen pendingState = iota
	stateCommitted
	stateAborted
)

// Pending is a checkpoint being written. Get a directory per pod with
// PodDir, let CRIU write the images there, then Commit (or Abort).
// Its methods are safe for concurrent use.
type Pending struct {
	s      *Store
	job    string
	owner  Owner
	id     string
	jobDir string
	tmp    string
	final  string
	perms  *perms

	mu    sync.Mutex
	state pendingState
	pods  map[string]string
}

// Begin starts checkpoint number 1 + the highest ever handed out for job
// (numbers are never reused, even after Abort or Delete). It creates the job
// directory if needed and the temporary directory <root>/<job>/.tmp-<id>.
func (s *Store) Begin(job string, owner Owner) (*Pending, error) {
	if err := ValidateJobID(job); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()

	pm := newPerms(owner, s.root)
	jobDir, err := s.ensureJobDir(job, pm)
	if err != nil {
		return nil, err
	}
	n, err := nextNumber(jobDir)
	if err != nil {
		return nil, fmt.Errorf("job %s: %w", job, err)
	}
	for ; n <= maxCkptNumber; n++ {
		id := formatID(n)
		tmp := filepath.Join(jobDir, tmpPrefix+id)
		final := filepath.Join(jobDir, id)
		if err := os.Mkdir(tmp, 0o700); errors.Is(err, fs.ErrExist) {
			continue // another process took this number
		} else if err != nil {
			return nil, fmt.Errorf("job %s: create checkpoint directory: %w", job, err)
		}
		if _, err := os.Lstat(final); err == nil {
			os.Remove(tmp)
			continue
		}
		if err := writeSeq(jobDir, n); err != nil {
			os.Remove(tmp)
			return nil, fmt.Errorf("job %s: %w", job, err)
		}
		if err := fixRootDir(tmp); err != nil {
			os.Remove(tmp)
			return nil, fmt.Errorf("job %s: %w", job, err)
		}
		if err := syncDir(jobDir); err != nil {
			os.Remove(tmp)
			return nil, fmt.Errorf("job %s: %w", job, err)
		}
		s.active[tmp] = true
		return &Pending{
			s: s, job: job, owner: owner, id: id,
			jobDir: jobDir, tmp: tmp, final: final, perms: pm,
			pods: map[string]string{},
		}, nil
	}
	return nil, fmt.Errorf("job %s: checkpoint numbers exhausted", job)
}

// ensureJobDir creates <root>/<job> (0700 root, owner r-x ACL, owner
// record) or fixes its permissions. It refuses (ErrOwner) a directory that
// belongs to another owner than pm's, before touching anything of it.
func (s *Store) ensureJobDir(job string, pm *perms) (string, error) {
	dir := s.jobDir(job)
	created := false
	if err := os.Mkdir(dir, 0o700); err == nil {
		created = true
	} else if !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("job %s: create job directory: %w", job, err)
	}
	f, err := openDir(dir)
	if err != nil {
		return "", fmt.Errorf("job %s: job directory %s is not a directory (or is a symlink): remove it: %w", job, dir, err)
	}
	defer f.Close()
	if _, err := s.pinOwner(job, dir, pm.owner); err != nil {
		return "", err
	}
	if err := pm.apply(f, true); err != nil {
		return "", fmt.Errorf("job %s: %w", job, err)
	}
	if created {
		if err := syncDir(s.root); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// fixRootDir makes a new directory root-owned 0700 without ACLs.
func fixRootDir(dir string) error {
	f, err := openDir(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return newPerms(Owner{}, "").apply(f, true)
}

// nextNumber returns 1 + the highest checkpoint number recorded in .seq or
// used by any checkpoint, temporary or being-deleted directory of the job.
func nextNumber(jobDir string) (int, error) {
	high := 0
	if b, err := os.ReadFile(filepath.Join(jobDir, seqName)); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			high = n
		}
	}
	entries, err := os.ReadDir(jobDir)
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		name := strings.TrimPrefix(strings.TrimPrefix(e.Name(), tmpPrefix), delPrefix)
		if n := parseID(name); n > high {
			high = n
		}
	}
	return high + 1, nil
}

// writeSeq records n as the last number handed out (atomically replaced).
func writeSeq(jobDir string, n int) error {
	f, err := os.CreateTemp(jobDir, tmpPrefix+"seq-*") // 0600
	if err != nil {
		return fmt.Errorf("record checkpoint number: %w", err)
	}
	_, err = fmt.Fprintf(f, "%d\n", n)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(jobDir, seqName))
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("record checkpoint number: %w", err)
	}
	return nil
}

// ID returns the checkpoint id, e.g. "ckpt-0003".
func (p *Pending) ID() string { return p.id }

// PodDir creates (once) and returns the image directory of a pod, mode 0700,
// under the temporary checkpoint directory.
func (p *Pending) PodDir(pod string) (string, error) {
	if err := ValidatePodName(pod); err != nil {
		return "", err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != stateOpen {
		return "", p.closedErr()
	}
	if dir, ok := p.pods[pod]; ok {
		return dir, nil
	}
	dir := filepath.Join(p.tmp, pod)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("checkpoint %s of job %s: pod %s: %w", p.id, p.job, pod, err)
	}
	p.pods[pod] = dir
	return dir, nil
}

func (p *Pending) closedErr() error {
	what := "committed"
	if p.state == stateAborted {
		what = "aborted"
	}
	return fmt.Errorf("checkpoint %s of job %s was already %s", p.id, p.job, what)
}

// Abort removes the temporary checkpoint. It is idempotent, and a no-op
// after a successful Commit, so `defer p.Abort()` is fine.
func (p *Pending) Abort() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == stateCommitted {
		return nil
	}
	p.state = stateAborted
	defer p.s.setActive(p.tmp, false)
	if err := os.RemoveAll(p.tmp); err != nil {
		return fmt.Errorf("abort checkpoint %s of job %s: %w (cruzd removes leftovers at start; see CleanTemp)", p.id, p.job, err)
	}
	syncDir(p.jobDir) // best effort: a leftover is harmless
	return nil
}

// Commit seals the checkpoint: for every pod in m.Pods (matched by Name to
// the PodDir directories, which must be the same set) it records each file's
// path, size and SHA-256, fixes ownership, modes and ACLs, fills m.Format, ID,
// Job, Owner, Created (if zero), Bytes and Phases["commit"] (if absent), signs
// m, writes manifest.json, fsyncs everything and renames the directory to its
// final name. On error the temporary directory is removed. Warnings report
// non-fatal problems (no ACL support: the owner cannot read its images).
func (p *Pending) Commit(m *Manifest) (warnings []string, err error) {
	start := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != stateOpen {
		return nil, p.closedErr()
	}
	if p.final == "" {
		return nil, errTransfer
	}
	p.state = stateAborted // until it succeeds
	defer func() {
		if err != nil {
			os.RemoveAll(p.tmp)
			err = fmt.Errorf("checkpoint %s of job %s: commit failed, nothing was saved: %w", p.id, p.job, err)
		}
		p.s.setActive(p.tmp, false)
		warnings = p.perms.Warnings()
	}()

	if m == nil {
		return nil, errors.New("nil manifest")
	}
	if err := p.checkPods(m); err != nil {
		return nil, err
	}

	// Pods are sealed side by side (and each pod's files too): a job of
	// many small pods waited for one fsync after another, 9.9 s for 1,024
	// pods in make bench-scale.
	errs := forEach(len(m.Pods), true, func(i int) error {
		pod := &m.Pods[i]
		files, err := p.sealPod(pod.Name)
		if err != nil {
			return err
		}
		pod.Files = files
		pod.Bytes = 0
		for _, f := range files {
			pod.Bytes += f.Size
		}
		return nil
	})
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	var total int64
	for _, pod := range m.Pods {
		total += pod.Bytes
	}

	m.Format = FormatVersion
	m.ID = p.id
	m.Job = p.job
	m.Owner = p.owner
	if m.Created.IsZero() {
		m.Created = time.Now()
	}
	m.Created = m.Created.UTC()
	m.Bytes = total
	if len(m.Spec) > 0 {
		spec, err := canonicalJSON(m.Spec)
		if err != nil {
			return nil, fmt.Errorf("job spec is not valid JSON: %w", err)
		}
		m.Spec = spec
	}
	if m.Phases == nil {
		m.Phases = map[string]int64{}
	}
	if _, ok := m.Phases["commit"]; !ok {
		m.Phases["commit"] = time.Since(start).Milliseconds()
	}
	sig, err := p.s.sign(m)
	if err != nil {
		return nil, err
	}
	m.Signature = sig
	if err := p.writeManifest(m); err != nil {
		return nil, err
	}

	d, err := openDir(p.tmp)
	if err != nil {
		return nil, err
	}
	err = p.perms.apply(d, true)
	if err == nil {
		err = d.Sync()
	}
	d.Close()
	if err != nil {
		return nil, fmt.Errorf("fsync %s: %w", p.tmp, err)
	}

	if err := renameNoReplace(p.tmp, p.final); err != nil {
		return nil, err
	}
	if err := syncDir(p.jobDir); err != nil {
		// Not durable: take it back rather than report a checkpoint that
		// may vanish. The deferred cleanup removes it.
		if rerr := os.Rename(p.final, p.tmp); rerr != nil {
			return nil, fmt.Errorf("%w (and could not withdraw the checkpoint: %v; delete it with cruz)", err, rerr)
		}
		return nil, err
	}
	p.state = stateCommitted
	return nil, nil
}

// checkPods checks that m.Pods and the PodDir directories are the same set
// and that the temporary directory holds nothing else.
func (p *Pending) checkPods(m *Manifest) error {
	if len(m.Pods) == 0 {
		return errors.New("the manifest lists no pods")
	}
	seen := map[string]bool{}
	for _, pod := range m.Pods {
		if err := ValidatePodName(pod.Name); err != nil {
			return err
		}
		if seen[pod.Name] {
			return fmt.Errorf("pod %s is listed twice in the manifest", pod.Name)
		}
		seen[pod.Name] = true
		if _, ok := p.pods[pod.Name]; !ok {
			return fmt.Errorf("pod %s is in the manifest but has no image directory (PodDir was not called for it)", pod.Name)
		}
	}
	entries, err := os.ReadDir(p.tmp)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !seen[e.Name()] {
			return fmt.Errorf("%s holds %q, which is not the directory of a pod listed in the manifest", p.tmp, e.Name())
		}
	}
	return nil
}

// sealPod fixes permissions of, checksums and fsyncs every file and
// directory of one pod, files in parallel. It returns the entries sorted by
// path.
func (p *Pending) sealPod(pod string) ([]FileEntry, error) {
	podDir := p.pods[pod]
	t, err := scanTree(podDir)
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", pod, err)
	}
	if len(t.bad) > 0 {
		b := t.bad[0]
		return nil, fmt.Errorf("pod %s: %s: %s; only regular files and directories may be saved", pod, b.rel, b.what)
	}
	entries := make([]FileEntry, len(t.files))
	errs := forEach(len(t.files), true, func(i int) error {
		rel := t.files[i].rel
		f, err := openRegular(filepath.Join(podDir, filepath.FromSlash(rel)))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := p.perms.apply(f, false); err != nil {
			return err
		}
		sum, n, err := hashFile(f)
		if err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("fsync %s: %w", f.Name(), err)
		}
		entries[i] = FileEntry{Path: rel, Size: n, SHA256: sum}
		return nil
	})
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("pod %s: %w", pod, err)
		}
	}
	// Children before parents, so each directory is synced after its entries.
	for i := len(t.dirs) - 1; i >= 0; i-- {
		d, err := openDir(t.dirs[i])
		if err != nil {
			return nil, fmt.Errorf("pod %s: %w", pod, err)
		}
		err = p.perms.apply(d, true)
		if err == nil {
			if err = d.Sync(); err != nil {
				err = fmt.Errorf("fsync %s: %w", d.Name(), err)
			}
		}
		d.Close()
		if err != nil {
			return nil, fmt.Errorf("pod %s: %w", pod, err)
		}
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Path < entries[j].Path })
	return entries, nil
}

func (p *Pending) writeManifest(m *Manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	path := filepath.Join(p.tmp, manifestName)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := p.perms.apply(f, false); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return f.Close()
}

// renameNoReplace renames a directory, failing if the target exists.
func renameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
		// Filesystem without RENAME_NOREPLACE (e.g. NFS): check, then rename.
		// Renaming onto a non-empty directory fails anyway.
		if _, lerr := os.Lstat(to); lerr == nil {
			err = unix.EEXIST
		} else {
			err = unix.Rename(from, to)
		}
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}
