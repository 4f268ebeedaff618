package store

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// signContext separates manifest signatures from any other use of the key.
const signContext = "cruz checkpoint manifest v1\n"

// sign returns the hex HMAC-SHA256 of m (with an empty Signature) in its
// canonical encoding (json.Marshal: fixed field order, sorted map keys).
func (s *Store) sign(m *Manifest) (string, error) {
	c := *m
	c.Signature = ""
	b, err := json.Marshal(&c)
	if err != nil {
		return "", err
	}
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(signContext))
	mac.Write(b)
	return hex.EncodeToString(mac.Sum(nil)), nil
}

// canonicalJSON returns raw as json.Marshal writes it inside a manifest
// (compact, HTML characters escaped), so that Spec reads back as committed.
func canonicalJSON(raw json.RawMessage) (json.RawMessage, error) {
	return json.Marshal(raw)
}

func (s *Store) signatureOK(m *Manifest) bool {
	got, err := hex.DecodeString(m.Signature)
	if err != nil {
		return false
	}
	want, err := s.sign(m)
	if err != nil {
		return false
	}
	w, _ := hex.DecodeString(want)
	return hmac.Equal(got, w)
}

// readManifest reads, authenticates and sanity-checks the manifest of
// checkpoint id of job, in dir. It does not look at the image files.
func (s *Store) readManifest(job, id, dir string) (*Manifest, error) {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &CheckpointError{Job: job, ID: id, Problem: "no such checkpoint", Kind: ErrNotFound}
	}
	if err != nil {
		return nil, corrupt(job, id, "", err.Error())
	}
	if !fi.IsDir() {
		return nil, corrupt(job, id, "", fmt.Sprintf("%s is not a directory (%s): the store was tampered with", dir, fi.Mode().Type()))
	}
	f, err := openRegular(filepath.Join(dir, manifestName))
	if err != nil {
		return nil, corrupt(job, id, manifestName, openProblem(err, "the checkpoint is incomplete or damaged"))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxManifestSize+1))
	if err != nil {
		return nil, corrupt(job, id, manifestName, err.Error())
	}
	if len(data) > maxManifestSize {
		return nil, corrupt(job, id, manifestName, fmt.Sprintf("larger than %d bytes: not a manifest", maxManifestSize))
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, corrupt(job, id, manifestName, fmt.Sprintf("unreadable (%v): the manifest is damaged", err))
	}
	if len(m.Spec) > 0 {
		if spec, err := canonicalJSON(m.Spec); err == nil {
			m.Spec = spec
		}
	}
	if !s.signatureOK(&m) {
		return nil, corrupt(job, id, manifestName, "signature mismatch: the manifest was edited, or signed with another cluster key (if every checkpoint fails this way, check that cruzd uses the same key file)")
	}
	if m.Format != FormatVersion {
		return nil, corrupt(job, id, manifestName, fmt.Sprintf("manifest format %d, this cruz reads format %d: use the cruz version that took the checkpoint", m.Format, FormatVersion))
	}
	if m.ID != id || m.Job != job {
		return nil, corrupt(job, id, manifestName, fmt.Sprintf("the manifest is that of checkpoint %s of job %s: the checkpoint directory was copied or renamed", m.ID, m.Job))
	}
	if err := checkManifestContent(&m); err != nil {
		return nil, corrupt(job, id, manifestName, err.Error())
	}
	return &m, nil
}

// checkManifestContent rejects names that must not be used as paths.
func checkManifestContent(m *Manifest) error {
	pods := map[string]bool{}
	for _, p := range m.Pods {
		if err := ValidatePodName(p.Name); err != nil {
			return err
		}
		if pods[p.Name] {
			return fmt.Errorf("pod %s listed twice", p.Name)
		}
		pods[p.Name] = true
		files := map[string]bool{}
		for _, f := range p.Files {
			if f.Path == "" || !fs.ValidPath(f.Path) || f.Path == "." || f.Size < 0 || len(f.SHA256) != 2*sha256.Size {
				return fmt.Errorf("invalid file entry %q of pod %s", f.Path, p.Name)
			}
			if files[f.Path] {
				return fmt.Errorf("file %s listed twice", path.Join(p.Name, f.Path))
			}
			files[f.Path] = true
		}
	}
	return nil
}

func openProblem(err error, missing string) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "missing: " + missing
	case errors.Is(err, unix.ELOOP):
		return "is a symbolic link: checkpoints hold only regular files; the image was tampered with"
	}
	var nr *notRegularError
	if errors.As(err, &nr) {
		return nr.problem()
	}
	return err.Error()
}

type notRegularError struct {
	path string
	mode fs.FileMode
}

func (e *notRegularError) Error() string { return e.path + ": " + e.problem() }

func (e *notRegularError) problem() string {
	if e.mode&fs.ModeSymlink != 0 {
		return "is a symbolic link: checkpoints hold only regular files; the image was tampered with"
	}
	return fmt.Sprintf("is not a regular file (%s): checkpoints hold only regular files; the image was tampered with", typeName(e.mode))
}

func typeName(m fs.FileMode) string {
	switch t := m.Type(); {
	case t&fs.ModeSymlink != 0:
		return "symbolic link"
	case t&fs.ModeNamedPipe != 0:
		return "named pipe"
	case t&fs.ModeSocket != 0:
		return "socket"
	case t&fs.ModeCharDevice != 0:
		return "character device"
	case t&fs.ModeDevice != 0:
		return "block device"
	case t.IsDir():
		return "directory"
	default:
		return t.String()
	}
}

// openRegular opens a regular file for reading, without following a symlink
// and without blocking on a FIFO.
func openRegular(p string) (*os.File, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	f := os.NewFile(uintptr(fd), p)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, &notRegularError{p, fi.Mode()}
	}
	return f, nil
}

const hashBufSize = 1 << 20

var hashBufs = sync.Pool{New: func() any { b := make([]byte, hashBufSize); return &b }}

// hashFile streams f through SHA-256 and returns the hex sum and the byte count.
func hashFile(f *os.File) (string, int64, error) {
	bp := hashBufs.Get().(*[]byte)
	defer hashBufs.Put(bp)
	buf := *bp
	h := sha256.New()
	var n int64
	for {
		k, err := f.Read(buf)
		h.Write(buf[:k])
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", n, fmt.Errorf("read %s: %w", f.Name(), err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// forEach runs fn(0..n-1) on up to GOMAXPROCS goroutines and returns the
// errors by index. With stop, no new item starts after an error.
func forEach(n int, stop bool, fn func(i int) error) []error {
	errs := make([]error, n)
	workers := min(runtime.GOMAXPROCS(0), n)
	var next atomic.Int64
	var failed atomic.Bool
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || (stop && failed.Load()) {
					return
				}
				if err := fn(i); err != nil {
					errs[i] = err
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	return errs
}

type treeFile struct {
	rel  string // slash-separated, relative to the scanned root
	size int64
}

type badEntry struct {
	rel  string
	what string
}

type tree struct {
	dirs  []string // absolute, the root first, parents before children
	files []treeFile
	bad   []badEntry // symlinks and other non-regular files
}

// scanTree lists a directory tree without following symlinks.
func scanTree(root string) (*tree, error) {
	t := &tree{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch typ := d.Type(); {
		case typ.IsDir():
			t.dirs = append(t.dirs, p)
		case typ.IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			t.files = append(t.files, treeFile{rel, fi.Size()})
		default:
			t.bad = append(t.bad, badEntry{rel, (&notRegularError{p, typ}).problem()})
		}
		return nil
	})
	return t, err
}

type fileProblem struct {
	file    string // relative to the checkpoint directory
	problem string
}

// verifyTree checks the files of checkpoint m in dir against m: the same
// set of files, regular files only, sizes, then checksums (in parallel).
func (s *Store) verifyTree(m *Manifest, dir string) error {
	var probs []fileProblem
	add := func(file, problem string) { probs = append(probs, fileProblem{file, problem}) }

	pods := map[string]*PodImage{}
	for i := range m.Pods {
		pods[m.Pods[i].Name] = &m.Pods[i]
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return corrupt(m.Job, m.ID, "", err.Error())
	}
	for _, e := range entries {
		switch {
		case e.Name() == manifestName:
		case pods[e.Name()] == nil:
			add(e.Name(), "not in the manifest: something was added to the checkpoint after it was taken")
		case !e.IsDir():
			add(e.Name(), (&notRegularError{e.Name(), e.Type()}).problem())
		}
	}

	type work struct {
		file string // relative to dir, slash-separated
		want FileEntry
	}
	var todo []work
	for _, pod := range m.Pods {
		podDir := filepath.Join(dir, pod.Name)
		fi, err := os.Lstat(podDir)
		if err != nil || !fi.IsDir() {
			if errors.Is(err, fs.ErrNotExist) {
				add(pod.Name, "pod image directory missing: the checkpoint is incomplete or was altered")
			}
			continue // otherwise reported above
		}
		t, err := scanTree(podDir)
		if err != nil {
			add(pod.Name, err.Error())
			continue
		}
		for _, b := range t.bad {
			add(path.Join(pod.Name, b.rel), b.what)
		}
		have := map[string]int64{}
		for _, f := range t.files {
			have[f.rel] = f.size
		}
		want := map[string]bool{}
		for _, f := range pod.Files {
			want[f.Path] = true
			file := path.Join(pod.Name, f.Path)
			size, ok := have[f.Path]
			switch {
			case !ok:
				if !badContains(t.bad, f.Path) {
					add(file, "missing: the image is incomplete or a file was deleted")
				}
			case size != f.Size:
				add(file, fmt.Sprintf("size mismatch: %d bytes on disk, %d in the manifest: the image was truncated or altered", size, f.Size))
			default:
				todo = append(todo, work{file, f})
			}
		}
		for _, f := range t.files {
			if !want[f.rel] {
				add(path.Join(pod.Name, f.rel), "not in the manifest: a file was added to the checkpoint after it was taken")
			}
		}
	}
	if len(probs) > 0 {
		return problemsError(m, probs)
	}

	errs := forEach(len(todo), true, func(i int) error {
		w := todo[i]
		f, err := openRegular(filepath.Join(dir, filepath.FromSlash(w.file)))
		if err != nil {
			return &fileProblemError{fileProblem{w.file, openProblem(err, "the image is incomplete or a file was deleted")}}
		}
		defer f.Close()
		sum, n, err := hashFile(f)
		switch {
		case err != nil:
			return &fileProblemError{fileProblem{w.file, fmt.Sprintf("unreadable (%v): the storage is failing", err)}}
		case n != w.want.Size:
			return &fileProblemError{fileProblem{w.file, fmt.Sprintf("size mismatch: %d bytes on disk, %d in the manifest: the image was truncated or altered", n, w.want.Size)}}
		case sum != w.want.SHA256:
			return &fileProblemError{fileProblem{w.file, "checksum mismatch: the image was altered or corrupted"}}
		}
		return nil
	})
	for _, err := range errs {
		var fp *fileProblemError
		if errors.As(err, &fp) {
			probs = append(probs, fp.p)
		}
	}
	if len(probs) > 0 {
		return problemsError(m, probs)
	}
	return nil
}

type fileProblemError struct{ p fileProblem }

func (e *fileProblemError) Error() string { return e.p.file + ": " + e.p.problem }

func badContains(bad []badEntry, rel string) bool {
	for _, b := range bad {
		if b.rel == rel {
			return true
		}
	}
	return false
}

// problemsError reports the first problem (by file name) and counts the rest.
func problemsError(m *Manifest, probs []fileProblem) error {
	sort.Slice(probs, func(i, j int) bool { return probs[i].file < probs[j].file })
	p := probs[0]
	problem := p.problem
	if n := len(probs) - 1; n == 1 {
		problem += " (and 1 more problem)"
	} else if n > 1 {
		problem += fmt.Sprintf(" (and %d more problems)", n)
	}
	return corrupt(m.Job, m.ID, p.file, problem)
}
