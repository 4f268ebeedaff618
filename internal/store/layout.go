package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cruz-hpc/cruz/internal/version"
)

// The store's layout (docs/store-layout.md) is versioned by a marker file at
// its root, .cruz-store:
//
//	cruz-store-layout 2
//	written-by cruz 0.2.0 (commit abc123def456)
//	written 2026-12-05T08:00:00.123456789Z
//	upgraded-from 1
//
// Only the first line matters to a reader; the others are for people. Open
// refuses a store of a newer layout than Layout, so that an old cruzd never
// misreads (or deletes what it does not understand in) a store a newer
// cruz has reshaped, and says what to do instead.
//
// Layout 1 is every store written before the marker existed: job
// directories of checkpoints, with or without .owner records. Layout 2 is
// layout 1 plus the marker, and .owner in every job directory (written
// lazily: pinOwner gives a layout 1 directory its record at first use).
// A layout 2 reader therefore reads layout 1 as it is, so Open upgrades a
// store without a marker in place, by writing the marker: nothing else is
// rewritten, and a cruzd of before the marker that still runs on another
// node of a shared store ignores the marker (a dot file, no job's name) and
// writes directories that layout 2 reads too.

const (
	// Layout is the store layout this cruzd writes; it reads every layout
	// up to it.
	Layout = 2

	layoutName      = ".cruz-store"
	layoutTmpPrefix = ".cruz-store.tmp-"
	layoutMagic     = "cruz-store-layout"
	maxLayoutSize   = 4096
	maxLayout       = 999_999
)

// ErrLayout: the store's layout marker names a layout this cruzd cannot
// read, or cannot be read itself.
var ErrLayout = errors.New("checkpoint store layout not readable")

// LayoutInfo is what the store's layout marker says, and what Open found.
type LayoutInfo struct {
	Version      int    // the layout of the store
	WrittenBy    string // "cruz 0.2.0 (commit ...)", or "" if the marker does not say
	Written      string // when the marker was written (RFC 3339), or ""
	UpgradedFrom int    // the layout the marker's writer found (1: no marker), or 0
	// Found is the layout this Open found: 0 for an empty store, else the
	// marker's version, or 1 for a store without a marker. Marked is
	// whether it found a marker (else it wrote one, or another agent did
	// meanwhile).
	Found  int
	Marked bool
}

// Layout is the store's layout, as Open read or wrote it.
func (s *Store) Layout() LayoutInfo { return s.layout }

// writer names this cruz in markers and messages.
func writer() string { return "cruz " + version.String() }

// openLayout reads the layout marker of the store at root, writing it if
// the store has none (an empty store, or one of layout 1), and refuses a
// marker of a newer layout or one it cannot read.
//
// The marker is written to a temporary file and hard-linked to its name:
// link(2) never replaces, so of agents opening a new shared store at once
// exactly one marker wins and all of them read it.
func openLayout(root string) (LayoutInfo, error) {
	path := filepath.Join(root, layoutName)
	found, marked := 0, true
	// Again if the temporary marker vanished before its link (another
	// agent's CleanTemp of the root meanwhile).
	for try := 0; ; try++ {
		info, err := readLayout(path)
		if err == nil {
			if marked {
				found = info.Version
			}
			info.Found, info.Marked = found, marked
			return info, checkLayout(root, info)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return LayoutInfo{}, err
		}
		if try == 3 {
			return LayoutInfo{}, fmt.Errorf("checkpoint store %s: write the layout marker %s: %w", root, path, err)
		}
		marked = false
		if found, err = layoutOfUnmarked(root); err != nil {
			return LayoutInfo{}, err
		}
		info = LayoutInfo{Version: Layout, WrittenBy: writer(), Written: time.Now().UTC().Format(time.RFC3339Nano)}
		if found > 0 {
			info.UpgradedFrom = found
		}
		if err := writeLayout(root, path, info); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return LayoutInfo{}, fmt.Errorf("checkpoint store %s: write the layout marker %s: %w", root, path, err)
		}
	}
}

// checkLayout refuses a layout newer than this cruzd reads.
func checkLayout(root string, info LayoutInfo) error {
	if info.Version <= Layout {
		return nil
	}
	by := info.WrittenBy
	if by == "" {
		by = "a cruz that did not say its version"
	}
	return fmt.Errorf("%w: the checkpoint store %s has layout version %d, written by %s; this cruzd (version %s) reads layouts up to %d: upgrade cruz on this node",
		ErrLayout, root, info.Version, by, version.String(), Layout)
}

// layoutOfUnmarked is the layout of a store without a marker: 0 if it is
// empty, else 1 (written by a cruz of before the marker).
func layoutOfUnmarked(root string) (int, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return 0, fmt.Errorf("checkpoint store %s: %w", root, err)
	}
	for _, e := range entries {
		if e.Name() != layoutName && !isLayoutTemp(e.Name()) {
			return 1, nil
		}
	}
	return 0, nil
}

// formatLayout is the marker's content.
func formatLayout(info LayoutInfo) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %d\n", layoutMagic, info.Version)
	if info.WrittenBy != "" {
		fmt.Fprintf(&b, "written-by %s\n", info.WrittenBy)
	}
	if info.Written != "" {
		fmt.Fprintf(&b, "written %s\n", info.Written)
	}
	if info.UpgradedFrom > 0 {
		fmt.Fprintf(&b, "upgraded-from %d\n", info.UpgradedFrom)
	}
	return b.Bytes()
}

// writeLayout links a new marker into root unless it has one already.
func writeLayout(root, path string, info LayoutInfo) error {
	f, err := os.CreateTemp(root, layoutTmpPrefix+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if os.Geteuid() == 0 {
		err = f.Chown(0, 0) // not the root directory's group, whatever it is
	}
	if err == nil {
		err = f.Chmod(0o644) // anyone may read which layout it is; CreateTemp made it 0600
	}
	if err == nil {
		_, err = f.Write(formatLayout(info))
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
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return syncDir(root)
}

// readLayout reads the marker at path: an error wrapping fs.ErrNotExist if
// there is none, ErrLayout if it is not a root-owned regular file that only
// root can write, or does not begin with "cruz-store-layout N".
func readLayout(path string) (LayoutInfo, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.ENOENT) {
		return LayoutInfo{}, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	if errors.Is(err, unix.ELOOP) {
		return LayoutInfo{}, badMarker(path, "it is a symbolic link")
	}
	if err != nil {
		return LayoutInfo{}, fmt.Errorf("%w: the checkpoint store's layout marker %s cannot be opened: %v", ErrLayout, path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return LayoutInfo{}, fmt.Errorf("%w: the checkpoint store's layout marker %s: %v", ErrLayout, path, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		return LayoutInfo{}, badMarker(path, "it is not a regular file ("+fi.Mode().Type().String()+")")
	case !ok || int(st.Uid) != os.Geteuid():
		return LayoutInfo{}, badMarker(path, fmt.Sprintf("it belongs to uid %d, not %d", st.Uid, os.Geteuid()))
	case fi.Mode().Perm()&0o022 != 0:
		return LayoutInfo{}, badMarker(path, fmt.Sprintf("group or others may write it (mode %#o)", fi.Mode().Perm()))
	}
	data, err := io.ReadAll(io.LimitReader(f, maxLayoutSize+1))
	if err != nil {
		return LayoutInfo{}, fmt.Errorf("%w: the checkpoint store's layout marker %s: %v", ErrLayout, path, err)
	}
	info, err := parseLayout(data)
	if err != nil {
		return LayoutInfo{}, fmt.Errorf("%w: the checkpoint store's layout marker %s is garbled (%v): it must begin with the line %q; "+
			"if the store was written by a cruz of layout %d or earlier, remove the file and start cruzd again (it writes the file anew), else upgrade cruz on this node",
			ErrLayout, path, err, layoutMagic+" N", Layout)
	}
	return info, nil
}

// badMarker refuses a marker that is not root's own file.
func badMarker(path, why string) error {
	return fmt.Errorf("%w: the checkpoint store's layout marker %s is not trusted: %s; "+
		"it must be a regular file of root that only root can write: as root, make it one (chown root:root %s && chmod 644 %s), "+
		"or remove it and start cruzd again (it writes the file anew)", ErrLayout, path, why, path, path)
}

// parseLayout reads a marker's content: the first line is "cruz-store-layout
// N"; of the others, the known keys are read and the rest ignored (a newer
// writer may add lines).
func parseLayout(data []byte) (LayoutInfo, error) {
	if len(data) > maxLayoutSize {
		return LayoutInfo{}, fmt.Errorf("over %d bytes", maxLayoutSize)
	}
	lines := strings.Split(string(data), "\n")
	fields := strings.Fields(lines[0])
	if len(fields) != 2 || fields[0] != layoutMagic || lines[0] != fields[0]+" "+fields[1] {
		return LayoutInfo{}, fmt.Errorf("first line %q", clip(lines[0]))
	}
	n, err := strconv.Atoi(fields[1])
	if err != nil || n < 1 || n > maxLayout || fields[1] != strconv.Itoa(n) {
		return LayoutInfo{}, fmt.Errorf("layout version %q is not a number from 1 to %d", clip(fields[1]), maxLayout)
	}
	info := LayoutInfo{Version: n}
	for _, l := range lines[1:] {
		key, val, _ := strings.Cut(l, " ")
		switch key {
		case "written-by":
			info.WrittenBy = clip(val)
		case "written":
			info.Written = clip(val)
		case "upgraded-from":
			info.UpgradedFrom, _ = strconv.Atoi(val)
		}
	}
	return info, nil
}

// clip makes s fit for a message: printable, at most 100 bytes.
func clip(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return '?'
		}
		return r
	}, s)
	if len(s) > 100 {
		s = s[:100] + "..."
	}
	return s
}

// isLayoutTemp tells a leftover of writeLayout (which CleanTemp removes).
func isLayoutTemp(name string) bool { return strings.HasPrefix(name, layoutTmpPrefix) }
