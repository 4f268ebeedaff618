// Package store keeps checkpoints of Cruz jobs on a filesystem directory
// (on a cluster, a shared filesystem).
//
// Layout (version 2; docs/store-layout.md has all of it):
//
//	<root>/                          0711 root
//	<root>/.cruz-store               layout marker: "cruz-store-layout 2" (0644 root; layout.go)
//	<root>/<job>/                    0700 root + ACL u:<owner>:r-x
//	<root>/<job>/.owner              owner record: the job's user, for good (0600 root; owner.go)
//	<root>/<job>/.seq                last checkpoint number handed out (root only)
//	<root>/<job>/ckpt-0001/          0700 root + ACL u:<owner>:r-x
//	<root>/<job>/ckpt-0001/manifest.json   0600 root + ACL u:<owner>:r--
//	<root>/<job>/ckpt-0001/<pod>/... CRIU images, same modes as above
//	<root>/<job>/.tmp-ckpt-0002/     a checkpoint being written (root only)
//	<root>/<job>/events.jsonl        the job's event log, bounded (0600 root; events.go)
//	<root>/<job>/output.log          a Slurm step's output log (the owner's; JobFile)
//
// A checkpoint is written under its temporary name and renamed to its final
// name only once every file has been checksummed, the signed manifest written
// and everything fsynced, so a crash never leaves a directory that List or
// Load accepts. CleanTemp removes the leftovers.
//
// The manifest records the size and SHA-256 of every file and is signed with
// HMAC-SHA256 under the cluster key; Load re-checks all of it.
//
// With an ACL the mode bits read back as 0750 (directories) and 0640 (files):
// the group bits of an ACL'd file show the ACL mask, while the owning group
// itself gets nothing (group::---).
package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// FormatVersion is the manifest format this package writes and reads.
const FormatVersion = 1

const (
	manifestName    = "manifest.json"
	tmpPrefix       = ".tmp-"
	delPrefix       = ".del-"
	seqName         = ".seq"
	idPrefix        = "ckpt-"
	maxManifestSize = 64 << 20
	minKeyLen       = 16
	maxCkptNumber   = 999_999_999
)

// Errors that checkpoint errors wrap, for errors.Is.
var (
	// ErrInvalidID: a job, checkpoint or pod id given by a caller is malformed.
	ErrInvalidID = errors.New("invalid id")
	// ErrNotFound: the checkpoint (or job) does not exist.
	ErrNotFound = errors.New("checkpoint not found")
	// ErrCorrupt: the checkpoint exists but fails verification.
	ErrCorrupt = errors.New("checkpoint failed verification")
)

// Owner is the user a job runs as; it may read, but not alter, its checkpoints.
type Owner struct{ UID, GID uint32 }

// FileEntry is one file of a pod image, Path relative to the pod directory
// with '/' separators.
type FileEntry struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// PodImage describes one pod of a checkpoint: its identity on the job
// network and the files of its CRIU image directory.
type PodImage struct {
	Name       string            `json:"name"`
	Role       string            `json:"role"`
	Rank       int               `json:"rank"`
	IP         string            `json:"ip"`
	MAC        string            `json:"mac"`
	Hostname   string            `json:"hostname"`
	Node       string            `json:"node"`
	DumpMillis int64             `json:"dump_ms"`
	Bytes      int64             `json:"bytes"`
	Files      []FileEntry       `json:"files"`
	Extra      map[string]string `json:"extra,omitempty"` // e.g. pipe inode keys for stdio reconnect
}

// Manifest is manifest.json of a checkpoint.
type Manifest struct {
	Format  int              `json:"format"` // FormatVersion
	ID      string           `json:"id"`
	Job     string           `json:"job"`
	JobName string           `json:"job_name"`
	Owner   Owner            `json:"owner"`
	Created time.Time        `json:"created"`
	Stopped bool             `json:"stopped"` // the job was stopped by this checkpoint
	Pods    []PodImage       `json:"pods"`
	Phases  map[string]int64 `json:"phases_ms"` // e.g. block, dump, commit, resume, total
	Bytes   int64            `json:"bytes"`
	Spec    json.RawMessage  `json:"spec,omitempty"` // opaque job spec the agent needs to restart
	// OutputOffset is where the job's output log stood when the
	// checkpoint held the job's traffic: what the job printed after it may
	// be printed again by a run restored from this checkpoint.
	OutputOffset int64 `json:"output_offset,omitempty"`
	// Warnings say what the checkpoint could not keep whole (a file the
	// job writes over store.max_file_bytes).
	Warnings  []string `json:"warnings,omitempty"`
	Signature string   `json:"signature"`
}

// CheckpointError reports a checkpoint that is missing or fails verification.
// Its message names the checkpoint, the file and what to do.
type CheckpointError struct {
	Job     string
	ID      string
	File    string // relative to the checkpoint directory, e.g. "rank1/pages-1.img"; may be empty
	Problem string // what is wrong and what it means
	Kind    error  // ErrCorrupt or ErrNotFound
}

func (e *CheckpointError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "checkpoint %s of job %s: ", e.ID, e.Job)
	if e.File != "" {
		fmt.Fprintf(&b, "file %s: ", e.File)
	}
	b.WriteString(e.Problem)
	b.WriteString("; ")
	if errors.Is(e.Kind, ErrNotFound) {
		fmt.Fprintf(&b, "list the job's checkpoints with cruz checkpoints %s", e.Job)
	} else {
		fmt.Fprintf(&b, "restore another checkpoint with --checkpoint ID (see cruz checkpoints %s)", e.Job)
	}
	return b.String()
}

func (e *CheckpointError) Unwrap() error { return e.Kind }

func corrupt(job, id, file, problem string) *CheckpointError {
	return &CheckpointError{Job: job, ID: id, File: file, Problem: problem, Kind: ErrCorrupt}
}

// idError is a malformed id from a caller.
type idError struct{ kind, id, rule string }

func (e *idError) Error() string {
	return fmt.Sprintf("invalid %s %q: %s", e.kind, e.id, e.rule)
}

func (e *idError) Is(target error) bool { return target == ErrInvalidID }

var (
	jobIDRe  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	ckptIDRe = regexp.MustCompile(`^ckpt-[0-9]{4,9}$`)
)

// ValidateJobID checks a job id: 1-128 letters, digits, '.', '_' or '-',
// starting with a letter or digit.
func ValidateJobID(job string) error {
	if !jobIDRe.MatchString(job) {
		return &idError{"job id", job, "use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"}
	}
	return nil
}

// ValidateCheckpointID checks a checkpoint id of the form ckpt-NNNN.
func ValidateCheckpointID(id string) error {
	if !ckptIDRe.MatchString(id) {
		return &idError{"checkpoint id", id, "expected the form ckpt-NNNN, e.g. ckpt-0003 (see cruz checkpoints JOB)"}
	}
	return nil
}

// ValidatePodName checks a pod name: not empty, no '/', not starting with
// '.', at most 255 bytes, not "manifest.json".
func ValidatePodName(pod string) error {
	switch {
	case pod == "", len(pod) > 255:
		return &idError{"pod name", pod, "must be 1-255 bytes"}
	case strings.ContainsAny(pod, "/\x00"):
		return &idError{"pod name", pod, "must not contain '/' or NUL"}
	case strings.HasPrefix(pod, "."):
		return &idError{"pod name", pod, "must not start with '.'"}
	case pod == manifestName:
		return &idError{"pod name", pod, "is reserved for the checkpoint manifest"}
	}
	return nil
}

func formatID(n int) string { return fmt.Sprintf("%s%04d", idPrefix, n) }

// parseID returns the number of a checkpoint id, or -1.
func parseID(id string) int {
	if !ckptIDRe.MatchString(id) {
		return -1
	}
	n, err := strconv.Atoi(id[len(idPrefix):])
	if err != nil {
		return -1
	}
	return n
}

// Store is a checkpoint store rooted at a directory. It is safe for
// concurrent use.
type Store struct {
	root   string
	key    []byte
	layout LayoutInfo

	mu     sync.Mutex
	active map[string]bool // temporary dirs being written through this Store

	eventsLimit int64 // bound of a job's event log; 0: MaxEventsBytes (tests set less)
}

// Open opens the store at root, an absolute path, creating it (mode 0711,
// owned by the caller, i.e. root) if it does not exist. key is the cluster
// key that signs manifests (see LoadKey). Open refuses a root that is not a
// directory, belongs to another user or is writable by group or others,
// and a store of a newer layout than this cruzd reads (see layout.go); it
// records the layout in a store that does not say it yet.
func Open(root string, key []byte) (*Store, error) {
	if root == "" || !filepath.IsAbs(root) {
		return nil, fmt.Errorf("checkpoint store root %q is not an absolute path: give the full path, e.g. /var/lib/cruz/checkpoints", root)
	}
	if len(key) < minKeyLen {
		return nil, fmt.Errorf("checkpoint store %s: cluster key is %d bytes, need at least %d (load it with store.LoadKey)", root, len(key), minKeyLen)
	}
	root = filepath.Clean(root)
	fi, err := os.Stat(root)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createRoot(root); err != nil {
			return nil, err
		}
		fi, err = os.Stat(root)
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint store %s: %w", root, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("checkpoint store root %s is not a directory: remove it or choose another path", root)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("checkpoint store root %s is owned by uid %d, not uid %d (root): fix with: chown root:root %s && chmod 711 %s",
			root, st.Uid, os.Geteuid(), root, root)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("checkpoint store root %s is writable by group or others (mode %#o): users could plant or remove checkpoints; fix with: chmod 711 %s",
			root, fi.Mode().Perm(), root)
	}
	layout, err := openLayout(root)
	if err != nil {
		return nil, err
	}
	return &Store{root: root, key: bytes.Clone(key), layout: layout, active: map[string]bool{}}, nil
}

func createRoot(root string) error {
	parent := filepath.Dir(root)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("checkpoint store %s: create parent directory: %w", root, err)
	}
	if err := os.Mkdir(root, 0o711); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("checkpoint store %s: %w", root, err)
	}
	if err := os.Chmod(root, 0o711); err != nil { // not subject to the umask
		return fmt.Errorf("checkpoint store %s: %w", root, err)
	}
	return syncDir(parent)
}

// Root returns the store's root directory.
func (s *Store) Root() string { return s.root }

func (s *Store) jobDir(job string) string { return filepath.Join(s.root, job) }

func (s *Store) setActive(dir string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.active[dir] = true
	} else {
		delete(s.active, dir)
	}
}

func (s *Store) isActive(dir string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active[dir]
}

// syncDir fsyncs a directory so that entries created, renamed or removed in
// it are durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// openDir opens a directory without following a symlink in its last component.
func openDir(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}
