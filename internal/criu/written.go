package criu

// The files a dump's processes hold open for writing. CRIU saves a process's
// descriptor (its path, flags, offset) but not the file: a restore opens it
// again by path and refuses it if its size changed ("has bad size"). The
// agent uses this list to save what is needed to put those files back as they
// were (internal/pod).

import (
	"path/filepath"
	"sort"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"golang.org/x/sys/unix"
)

// WrittenFile is a regular file some process of the images may write to.
type WrittenFile struct {
	Path string
	// Size is the file's size when it was dumped, as CRIU recorded it (a
	// restore insists on it), or -1: CRIU records none for a file opened
	// write-only for appending (a log), and checks none.
	Size int64
	// Append: every descriptor the processes write it through is in
	// append mode, so the job cannot have changed what the file held at the
	// dump, only added to it.
	Append bool
}

// WrittenFiles lists the regular files the images in dir hold open (or
// mapped) with write access, each once, sorted by path. Like ImageFiles it
// leaves out files on the pod's own mounts (CRIU saves those file systems
// whole) and deleted files (CRIU saves their contents). Devices such as
// /dev/null, which CRIU records as REG entries too, are left out by their
// mode.
func WrittenFiles(dir string) ([]WrittenFile, error) {
	internal, err := podMounts(dir)
	if err != nil {
		return nil, err
	}
	gh, err := ghosts(dir)
	if err != nil {
		return nil, err
	}
	entries, err := decode(filepath.Join(dir, "files.img"), "FILES", &fdinfo.FileEntry{})
	if err != nil {
		return nil, err
	}
	byPath := map[string]*WrittenFile{}
	for _, e := range entries {
		f := e.(*fdinfo.FileEntry)
		r := f.GetReg()
		if f.GetType() != fdinfo.FdTypes_REG || r == nil || gh[f.GetId()] || internal[uint32(r.GetMntId())] {
			continue
		}
		if r.GetFlags()&unix.O_ACCMODE == unix.O_RDONLY || r.GetMode()&unix.S_IFMT != unix.S_IFREG {
			continue
		}
		app := r.GetFlags()&unix.O_APPEND != 0
		if w := byPath[r.GetName()]; w != nil {
			// One file, more descriptors: append-only only if all are.
			w.Append = w.Append && app
		}
		size := int64(-1)
		if r.Size != nil {
			size = int64(r.GetSize())
		}
		if w := byPath[r.GetName()]; w != nil && w.Size < 0 {
			w.Size = size
		}
		if byPath[r.GetName()] == nil {
			byPath[r.GetName()] = &WrittenFile{Path: r.GetName(), Size: size, Append: app}
		}
	}
	out := make([]WrittenFile, 0, len(byPath))
	for _, w := range byPath {
		out = append(out, *w)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}
