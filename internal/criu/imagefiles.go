package criu

// The files a restore opens by path. CRIU restores as root and opens each
// regular file, directory, FIFO and mapped file of the images again by the
// path the dump recorded, following symbolic links: a user who replaced
// such a path by a link to a file only root may write could have CRIU open
// it for them. The agent reads the list first and opens each path as the
// owner (internal/pod).

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	criufs "github.com/checkpoint-restore/go-criu/v7/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/mnt"
	remap "github.com/checkpoint-restore/go-criu/v7/crit/images/remap-file-path"
)

// FileUse is how a restore uses one path.
type FileUse struct {
	Path  string
	Flags int  // open flags as recorded (O_ACCMODE, O_APPEND, ...); for a mapped file, its mapping's
	Dir   bool // a directory (a working directory, a root, or an open one)
	Exec  bool // some process runs it (its executable)
	Why   string
}

const (
	vmaFilePrivate = 1 << 6 // CRIU's VMA_FILE_PRIVATE
	vmaFileShared  = 1 << 7 // CRIU's VMA_FILE_SHARED
)

// ImageFiles lists the paths the images in dir have CRIU open, each once,
// with every way they are used merged (the widest access mode). Files on a
// mount the pod made itself (its /proc, a private /dev/shm or /dev/pts) are
// left out: CRIU makes those file systems again from the images, and no
// path there leads out of the pod. Deleted files CRIU keeps in the images
// (ghost files) are left out too: they are made again, not opened.
func ImageFiles(dir string) ([]FileUse, error) {
	internal, err := podMounts(dir)
	if err != nil {
		return nil, err
	}
	entries, err := decode(filepath.Join(dir, "files.img"), "FILES", &fdinfo.FileEntry{})
	if err != nil {
		return nil, err
	}
	byID := map[uint32]*FileUse{}
	for _, e := range entries {
		f := e.(*fdinfo.FileEntry)
		r := f.GetReg()
		if f.GetType() != fdinfo.FdTypes_REG || r == nil {
			continue
		}
		if internal[uint32(r.GetMntId())] {
			continue
		}
		byID[f.GetId()] = &FileUse{Path: r.GetName(), Flags: int(r.GetFlags()), Dir: r.GetMode()&unix.S_IFMT == unix.S_IFDIR, Why: "open file"}
	}
	gh, err := ghosts(dir)
	if err != nil {
		return nil, err
	}
	for id := range gh {
		delete(byID, id)
	}
	// How the processes use them: mapped files, executables, working
	// directories and roots.
	mms, err := filepath.Glob(filepath.Join(dir, "mm-*.img"))
	if err != nil {
		return nil, err
	}
	for _, path := range mms {
		es, err := decode(path, "MM", &mm.MmEntry{})
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			m := e.(*mm.MmEntry)
			if u := byID[m.GetExeFileId()]; u != nil {
				u.Exec, u.Why = true, "executable"
			}
			for _, v := range m.GetVmas() {
				if v.GetStatus()&(vmaFilePrivate|vmaFileShared) == 0 {
					continue
				}
				u := byID[uint32(v.GetShmid())]
				if u == nil {
					continue
				}
				if u.Why == "open file" {
					u.Why = "mapped file"
				}
				u.Flags = widen(u.Flags, int(v.GetFdflags()))
			}
		}
	}
	fss, err := filepath.Glob(filepath.Join(dir, "fs-*.img"))
	if err != nil {
		return nil, err
	}
	for _, path := range fss {
		es, err := decode(path, "FS", &criufs.FsEntry{})
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			f := e.(*criufs.FsEntry)
			if u := byID[f.GetCwdId()]; u != nil {
				u.Dir, u.Why = true, "working directory"
			}
			if u := byID[f.GetRootId()]; u != nil {
				u.Dir, u.Why = true, "root directory"
			}
		}
	}
	ids := make([]uint32, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	out := make([]FileUse, 0, len(ids))
	for _, id := range ids {
		out = append(out, *byID[id])
	}
	return out, nil
}

// widen merges two open modes into the one that allows both.
func widen(a, b int) int {
	acc := a & unix.O_ACCMODE
	if acc != b&unix.O_ACCMODE {
		acc = unix.O_RDWR
	}
	return a&^unix.O_ACCMODE | acc | b&unix.O_APPEND
}

// podMounts lists the mounts (by CRIU's mount id) that the pod made and
// CRIU makes again: those not marked external. Mounts of the node are
// external (the agent dumps with auto-ext-mnt).
func podMounts(dir string) (map[uint32]bool, error) {
	out := map[uint32]bool{}
	paths, err := filepath.Glob(filepath.Join(dir, "mountpoints-*.img"))
	if err != nil {
		return nil, err
	}
	for _, path := range paths {
		es, err := decode(path, "MNTS", &mnt.MntEntry{})
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			m := e.(*mnt.MntEntry)
			if !m.GetExtMount() && m.GetExtKey() == "" && m.GetMountpoint() != "/" {
				out[m.GetMntId()] = true
			}
		}
	}
	return out, nil
}

// ghosts lists the file ids that CRIU restores from a copy in the images
// (remap-fpath.img): deleted files.
func ghosts(dir string) (map[uint32]bool, error) {
	out := map[uint32]bool{}
	path := filepath.Join(dir, "remap-fpath.img")
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	es, err := decode(path, "REMAP_FPATH", &remap.RemapFilePathEntry{})
	if err != nil {
		return nil, err
	}
	for _, e := range es {
		out[e.(*remap.RemapFilePathEntry).GetOrigId()] = true
	}
	return out, nil
}

func (u FileUse) String() string { return fmt.Sprintf("%s %s (flags %#o)", u.Why, u.Path, u.Flags) }
