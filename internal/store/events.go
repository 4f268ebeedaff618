package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// A job's event log in the store, <root>/<job>/events.jsonl: one JSON event
// per line, appended by the job's coordinator (whichever node that is) and
// kept by a plain cruz rm, so that cruz events and cruz history work after
// the job is gone from every agent, and on any node of a shared store. It is
// root's (0600): users read it through the agent, which checks the job's
// owner record first (ReadEvents).
//
// Its size is bounded: events are appended while the log is under
// MaxEventsBytes; the event that takes it there is followed by the caller's
// note (that later events are dropped), and later events are dropped. The
// first events (where the job started, its first checkpoints) are kept,
// which is what a history needs; the agent's own log has every event.

const (
	eventsName = "events.jsonl"
	// MaxEventsBytes bounds a job's event log in the store (about 5,000
	// events). The file may exceed it by one event and the note.
	MaxEventsBytes = 1 << 20
	// MaxEventLine is the longest event line (or note) AppendEvent takes.
	MaxEventLine = 8 << 10
)

// ErrEventsFull: the job's event log is at its bound; the event was dropped.
var ErrEventsFull = errors.New("the job's event log is full")

// AppendEvent appends line (one JSON event, no newline) to job's event log
// in the store, creating the job's directory for owner if needed; it is
// refused (*OwnerError) if the directory is another user's. When the log
// reaches its bound with this line, note (one JSON event saying that later
// ones are dropped) is appended after it; once there, later lines are
// dropped with ErrEventsFull.
func (s *Store) AppendEvent(job string, owner Owner, line, note []byte) error {
	if len(line) > MaxEventLine || len(note) > MaxEventLine {
		return fmt.Errorf("job %s: an event of %d bytes is longer than %d", job, max(len(line), len(note)), MaxEventLine)
	}
	path, err := s.JobFile(job, owner, eventsName)
	if err != nil {
		return err
	}
	// O_NOFOLLOW and the checks below: the directory is root's, but a
	// store shared by nodes is only as safe as its filesystem.
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0o600)
	if err != nil {
		return &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("job %s: %s is not a regular file: remove it", job, path)
	}
	limit := s.eventsLimit
	if limit == 0 {
		limit = MaxEventsBytes
	}
	if fi.Size() >= limit {
		return fmt.Errorf("job %s: %w (%d bytes)", job, ErrEventsFull, limit)
	}
	buf := append(append([]byte{}, line...), '\n')
	if fi.Size()+int64(len(buf)) >= limit && len(note) > 0 {
		buf = append(append(buf, note...), '\n')
	}
	if _, err := f.Write(buf); err != nil {
		return fmt.Errorf("job %s: append to its event log: %w", job, err)
	}
	return nil
}

// ReadEvents returns job's event log in the store (one JSON event a line)
// for the user uid: root may read any job's, a user only their own job's
// (else an *OwnerError, ErrOwner). A job with no directory in the store, or
// no event log, gives ErrNotFound.
func (s *Store) ReadEvents(job string, uid uint32) ([]byte, error) {
	if err := s.MayRead(job, uid); err != nil {
		return nil, err
	}
	path := filepath.Join(s.jobDir(job), eventsName)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("job %s has no event log in the store: %w", job, ErrNotFound)
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("job %s: %s is not a regular file: remove it", job, path)
	}
	// Bounded even if something else grew the file.
	return io.ReadAll(io.LimitReader(f, MaxEventsBytes+2*MaxEventLine))
}

// MayRead tells whether the user uid may read what the store holds of job
// (its checkpoints' list, its event log) without creating or changing
// anything: nil for root, or for the user the job's owner record names (or,
// in a directory of an earlier version without one, that its checkpoints
// show); an *OwnerError (ErrOwner) for another user; ErrNotFound if the
// store has nothing of job.
func (s *Store) MayRead(job string, uid uint32) error {
	if err := ValidateJobID(job); err != nil {
		return err
	}
	dir := s.jobDir(job)
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("the store has nothing of job %s: %w", job, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("job %s: %w", job, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("job %s: %s is not a directory", job, dir)
	}
	if uid == 0 {
		return nil
	}
	rec, err := readOwner(dir)
	if errors.Is(err, fs.ErrNotExist) {
		o, ok := s.legacyOwner(job, dir)
		if !ok {
			return fmt.Errorf("job %s: the store does not say whose it is, so only root may read it: %w", job, ErrOwner)
		}
		rec, err = recordOf(o), nil
	}
	if err != nil {
		return fmt.Errorf("job %s: owner record: %w", job, err)
	}
	if rec.UID != uid {
		return &OwnerError{Job: job, Has: rec, Not: recordOf(Owner{UID: uid})}
	}
	return nil
}
