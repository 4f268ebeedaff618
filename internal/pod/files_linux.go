package pod

// Files the job writes roll back with it. CRIU saves a process's open
// descriptors, not the files behind them: a job rolled back to a checkpoint
// (a recovery, a requeue) finds its log or trajectory file longer than the
// checkpoint left it, and CRIU refuses to restore it ("has bad size") or, for
// a file opened for appending, restores the job to write after lines it will
// write again. At each dump, while CRIU still holds the processes frozen,
// SaveFiles keeps in the pod's images what is needed to put every regular
// file the pod holds open for writing back as it was: the file's contents
// for a file written in place (within a bound per pod), its size and the
// checksum of its end for one appended to (or over the bound). Before each
// restore, RestoreFiles puts them back. Both open the job's files as its
// owner (asOwner), never as root, and never through a symbolic link.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/criu"
)

const (
	// filesDir is the directory of a pod's images that holds them; the
	// store seals and verifies it with the images.
	filesDir   = "cruz-files"
	filesIndex = "index.json"
	// tailBytes of a file whose size only is kept are checksummed: a
	// restore that finds them changed refuses to cut the file (the job
	// rewrote it in place, so cutting it would not give it back).
	tailBytes = 64 << 10
)

// savedFile is how one file is put back.
type savedFile struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	Append bool   `json:"append,omitempty"`
	// Data names the copy of its contents in filesDir, if kept.
	Data string `json:"data,omitempty"`
	// TailSHA256 is the SHA-256 of its TailBytes bytes before Size, when
	// only its size is kept.
	TailBytes  int64  `json:"tail_bytes,omitempty"`
	TailSHA256 string `json:"tail_sha256,omitempty"`
}

// SaveFiles saves into the pod's images at dir what a restore needs to put
// back the files the images hold open for writing (see above). Contents
// are kept for files written in place while the pod's total stays within
// maxBytes; a file over it keeps its size only, and warn says so, naming
// it. It must run while the processes are frozen (criu.DumpOptions.PostDump).
func SaveFiles(dir string, spec Spec, maxBytes int64, warn func(string)) error {
	written, err := criu.WrittenFiles(dir)
	if err != nil {
		return api.Errorf(api.ErrInvalid, "pod %s: read the files it writes from its images: %w", spec.Name, err)
	}
	return saveFiles(dir, spec, written, maxBytes, warn)
}

func saveFiles(dir string, spec Spec, written []criu.WrittenFile, maxBytes int64, warn func(string)) error {
	if len(written) == 0 {
		return nil
	}
	owner := Owner(spec)
	files := make([]*os.File, len(written))
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	// Opened as the owner; read and copied as root below (the images
	// directory is not the owner's to write).
	if err := asOwner(owner, func() error {
		for i, w := range written {
			f, err := openNoFollow(w.Path, unix.O_RDONLY)
			if err != nil {
				return fmt.Errorf("pod %s: the job writes %s, which its owner (uid %d) cannot read now: %w; "+
					"a checkpoint keeps what puts the file back on a rollback, read as the owner", spec.Name, w.Path, owner.UID, err)
			}
			files[i] = f
		}
		return nil
	}); err != nil {
		return err
	}
	out := filepath.Join(dir, filesDir)
	if err := os.Mkdir(out, 0o700); err != nil {
		return err
	}
	var index []savedFile
	left := maxBytes
	for i, w := range written {
		f := files[i]
		if pseudoFile(f) {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			return err
		}
		size := w.Size
		if size < 0 { // appended to: CRIU recorded no size; the file is as the frozen job left it
			size = st.Size
		}
		if st.Size < size {
			return fmt.Errorf("pod %s: %s is %d bytes, %d when dumped: something outside the job cut it", spec.Name, w.Path, st.Size, size)
		}
		s := savedFile{Path: w.Path, Size: size, Append: w.Append}
		if !w.Append && size <= left {
			s.Data = strconv.Itoa(i)
			if err := copyN(filepath.Join(out, s.Data), f, size); err != nil {
				return fmt.Errorf("pod %s: save %s: %w", spec.Name, w.Path, err)
			}
			left -= size
		} else {
			if !w.Append {
				warn(fmt.Sprintf("pod %s: %s (%d bytes) is written in place but over store.max_file_bytes (%d bytes a pod, %d left): "+
					"only its size is kept, and a rollback to this checkpoint works only if the job has not changed what the file held by then; "+
					"raise store.max_file_bytes to keep it whole", spec.Name, w.Path, size, maxBytes, left))
			}
			s.TailBytes = min(size, tailBytes)
			sum, err := sumRange(f, size-s.TailBytes, s.TailBytes)
			if err != nil {
				return fmt.Errorf("pod %s: read %s: %w", spec.Name, w.Path, err)
			}
			s.TailSHA256 = sum
		}
		index = append(index, s)
	}
	if len(index) == 0 {
		return os.Remove(out)
	}
	b, err := json.MarshalIndent(index, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, filesIndex), b, 0o600)
}

// RestoreFiles puts back the files SaveFiles saved in the images at dir,
// as the pod's owner. Every file is checked before any is changed: a file
// that is gone, not a regular file, shorter than at the checkpoint, or whose
// saved end no longer matches fails the restore with nothing changed.
func RestoreFiles(dir string, spec Spec) error {
	b, err := os.ReadFile(filepath.Join(dir, filesDir, filesIndex))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var index []savedFile
	if err := json.Unmarshal(b, &index); err != nil {
		return api.Errorf(api.ErrInvalid, "pod %s: %s in its images: %w", spec.Name, filesIndex, err)
	}
	// The saved contents are read as root, before the owner's thread.
	data := make([]*os.File, len(index))
	files := make([]*os.File, len(index))
	defer func() {
		for _, f := range append(data, files...) {
			if f != nil {
				f.Close()
			}
		}
	}()
	for i, s := range index {
		if !filepath.IsAbs(s.Path) || s.Size < 0 || (s.Data == "" && s.TailSHA256 == "") || (s.Data != "" && s.Data != filepath.Base(s.Data)) {
			return api.Errorf(api.ErrInvalid, "pod %s: bad entry for %q in %s", spec.Name, s.Path, filesIndex)
		}
		if s.Data != "" {
			if data[i], err = os.Open(filepath.Join(dir, filesDir, s.Data)); err != nil {
				return err
			}
		}
	}
	owner := Owner(spec)
	return asOwner(owner, func() error {
		for i, s := range index {
			f, err := openNoFollow(s.Path, unix.O_RDWR)
			if err != nil {
				return api.Errorf(api.ErrForbidden, "pod %s: the job's owner (uid %d) cannot open %s, a file the job wrote, to put it back as it was at the checkpoint: %v; "+
					"put the file back (not a link), or restart from another checkpoint", spec.Name, owner.UID, s.Path, err)
			}
			files[i] = f
			if s.Data != "" {
				continue
			}
			st, err := f.Stat()
			if err != nil {
				return err
			}
			if st.Size() < s.Size {
				return api.Errorf(api.ErrConflict, "pod %s: %s is %d bytes, shorter than the %d it had at the checkpoint: it was cut or replaced since, and cannot be put back", spec.Name, s.Path, st.Size(), s.Size)
			}
			sum, err := sumRange(f, s.Size-s.TailBytes, s.TailBytes)
			if err != nil {
				return err
			}
			if sum != s.TailSHA256 {
				return api.Errorf(api.ErrConflict, "pod %s: %s was changed in place after the checkpoint (its bytes up to the checkpoint's end of file differ), and only its size was kept: it cannot be put back; "+
					"a file written in place is kept whole only within store.max_file_bytes", spec.Name, s.Path)
			}
		}
		for i, s := range index {
			f := files[i]
			if s.Data != "" {
				if _, err := f.Seek(0, io.SeekStart); err != nil {
					return err
				}
				if n, err := io.Copy(f, io.LimitReader(data[i], s.Size)); err != nil || n != s.Size {
					return fmt.Errorf("pod %s: put back %s: wrote %d of %d bytes: %v", spec.Name, s.Path, n, s.Size, err)
				}
			}
			if err := f.Truncate(s.Size); err != nil {
				return fmt.Errorf("pod %s: put back %s: %w", spec.Name, s.Path, err)
			}
		}
		return nil
	})
}

// openNoFollow opens a regular file without following a link in its last
// component, and without blocking or taking a terminal.
func openNoFollow(path string, mode int) (*os.File, error) {
	fd, err := unix.Open(path, mode|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, errors.New("not a regular file")
	}
	return os.NewFile(uintptr(fd), path), nil
}

// pseudoFile tells a file of the kernel's (/sys, a cgroup's, /proc of
// another namespace), which has no contents to put back, from a real one.
func pseudoFile(f *os.File) bool {
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &fs); err != nil {
		return false
	}
	switch int64(fs.Type) {
	case unix.PROC_SUPER_MAGIC, unix.SYSFS_MAGIC, unix.CGROUP_SUPER_MAGIC, unix.CGROUP2_SUPER_MAGIC,
		unix.DEBUGFS_MAGIC, unix.TRACEFS_MAGIC, unix.SECURITYFS_MAGIC, unix.BPF_FS_MAGIC:
		return true
	}
	return false
}

// copyN copies the first n bytes of src into a new file at path.
func copyN(path string, src *os.File, n int64) error {
	dst, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	got, err := io.Copy(dst, io.NewSectionReader(src, 0, n))
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil && got != n {
		err = fmt.Errorf("read %d of %d bytes", got, n)
	}
	return err
}

// sumRange returns the hex SHA-256 of n bytes of f from off.
func sumRange(f *os.File, off, n int64) (string, error) {
	h := sha256.New()
	got, err := io.Copy(h, io.NewSectionReader(f, off, n))
	if err != nil {
		return "", err
	}
	if got != n {
		return "", fmt.Errorf("%s: read %d of %d bytes", f.Name(), got, n)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
