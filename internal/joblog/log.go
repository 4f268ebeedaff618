// Package joblog owns a job's output log: the frames of its pods' stdout
// and stderr, and the frames that end its runs, appended as JSON lines to
// one file that clients follow from an offset; and the filter that keeps a
// rolled-back run from printing again what the failed run printed. It knows
// nothing of pods, nodes or HTTP.
package joblog

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/cruz-hpc/cruz/internal/api"
)

// Log is a job's output: every frame (a chunk of stdout or stderr, or
// the event that ended a run) appended as one JSON line to a file in the
// job's run directory. Clients follow it from an offset, so a client that
// attaches late, or a restart's client, sees each byte exactly once and in
// order, and the agent holds no output in memory.
type Log struct {
	path    string
	mu      sync.Mutex
	f       *os.File
	size    int64
	closed  bool
	changed chan struct{} // closed and replaced at every append
}

// Open opens (creating it if need be) the output log at path, owned by uid.
func Open(path string, uid uint32) (*Log, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open job output log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat job output log: %w", err)
	}
	_ = f.Chown(int(uid), -1)
	return &Log{path: path, f: f, size: st.Size(), changed: make(chan struct{})}, nil
}

// Append writes one frame and wakes the followers.
func (o *Log) Append(fr api.Frame) {
	b, err := json.Marshal(fr)
	if err != nil {
		return
	}
	b = append(b, '\n')
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.f == nil {
		return
	}
	if n, err := o.f.Write(b); err == nil {
		o.size += int64(n)
	}
	close(o.changed)
	o.changed = make(chan struct{})
}

// Offset is where the next frame will start.
func (o *Log) Offset() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.size
}

func (o *Log) Close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.f != nil {
		o.f.Close()
		o.f = nil
	}
	o.closed = true
	close(o.changed)
	o.changed = make(chan struct{})
}

// Follow calls fn for every frame from offset from on, until a terminal frame
// (which fn also gets), ctx ends, or fn returns an error.
func (o *Log) Follow(ctx context.Context, from int64, fn func(api.Frame) error) error {
	return o.FollowOffsets(ctx, from, func(f api.Frame, _ int64) error { return fn(f) })
}

// FollowOffsets is Follow that also passes the offset each frame ends at.
func (o *Log) FollowOffsets(ctx context.Context, from int64, fn func(api.Frame, int64) error) error {
	f, err := os.Open(o.path)
	if err != nil {
		return fmt.Errorf("open job output log: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return err
	}
	r := bufio.NewReaderSize(f, 64<<10)
	var partial []byte
	off := from
	for {
		o.mu.Lock()
		wait, closed := o.changed, o.closed
		o.mu.Unlock()
		for {
			line, err := r.ReadBytes('\n')
			if err != nil { // a frame being written: keep what we have
				partial = append(partial, line...)
				break
			}
			if len(partial) > 0 {
				line = append(partial, line...)
				partial = nil
			}
			off += int64(len(line))
			var fr api.Frame
			if json.Unmarshal(line, &fr) != nil {
				continue
			}
			if err := fn(fr, off); err != nil {
				return err
			}
			if fr.Terminal() {
				return nil
			}
		}
		if closed {
			return io.EOF
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wait:
		}
	}
}

// Path is where the log is.
func (o *Log) Path() string { return o.path }

// Frames reads the frames of the output log at path between offsets from
// and to (to < 0: to its end); nothing if there is no log.
func Frames(path string, from, to int64) []api.Frame {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(from, 0); err != nil {
		return nil
	}
	var r io.Reader = f
	if to >= 0 {
		r = io.LimitReader(f, max(to-from, 0))
	}
	var out []api.Frame
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var fr api.Frame
		if json.Unmarshal(sc.Bytes(), &fr) == nil {
			out = append(out, fr)
		}
	}
	return out
}

// StdoutSince returns the stdout in the output log at path from offset on.
func StdoutSince(path string, offset int64) []byte {
	var out []byte
	for _, fr := range Frames(path, offset, -1) {
		if fr.Stream == "stdout" {
			out = append(out, fr.Data...)
		}
	}
	return out
}

// OutputFrames reads the stdout and stderr frames of an output log up to
// offset to (not the frames that ended runs).
func OutputFrames(path string, to int64) []api.Frame {
	var out []api.Frame
	for _, fr := range Frames(path, 0, to) {
		if fr.Stream != "" && len(fr.Data) > 0 {
			out = append(out, api.Frame{Stream: fr.Stream, Data: fr.Data})
		}
	}
	return out
}
