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
	"errors"
	"fmt"
	"io"
	"io/fs"
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
	// limit bounds the output the log takes (SetLimit); full: reached.
	limit   int64
	full    bool
	onLimit func(limit int64)
}

// LimitNotice is the line that ends a job's output at the log's bound, on
// its stderr.
func LimitNotice(limit int64) string {
	return fmt.Sprintf("cruz: this job's output reached the bound of its output log (%d bytes, output.max_log_bytes in cruzd.toml); what it prints from now on is discarded (it runs on): write large output to files\n", limit)
}

// SetLimit bounds the output the log takes to limit bytes of log (frames
// included). An output frame that would pass it is dropped, and so is all
// output after it: the first such drop appends LimitNotice as a stderr frame
// and calls onLimit (without the log's lock held). Frames that end a run
// are always appended, so that followers learn how the run ended.
func (o *Log) SetLimit(limit int64, onLimit func(limit int64)) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.limit, o.onLimit = limit, onLimit
	// A log reopened full gets the notice again, for the new run's
	// followers.
	o.full = false
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

// Append writes one frame and wakes the followers; output beyond the
// log's bound is dropped (SetLimit).
func (o *Log) Append(fr api.Frame) {
	b, err := json.Marshal(fr)
	if err != nil {
		return
	}
	b = append(b, '\n')
	o.mu.Lock()
	if o.f == nil {
		o.mu.Unlock()
		return
	}
	output := fr.Stream != "" && !fr.Terminal()
	var told func(int64)
	if output && o.limit > 0 && (o.full || o.size+int64(len(b)) > o.limit) {
		if o.full {
			o.mu.Unlock()
			return
		}
		o.full, told = true, o.onLimit
		if head := fitFrame(fr, o.limit-o.size, len(b)); head != nil {
			if n, err := o.f.Write(head); err == nil {
				o.size += int64(n)
			}
		}
		b, _ = json.Marshal(api.Frame{Stream: "stderr", Data: []byte(LimitNotice(o.limit))})
		b = append(b, '\n')
	}
	if n, err := o.f.Write(b); err == nil {
		o.size += int64(n)
	}
	close(o.changed)
	o.changed = make(chan struct{})
	limit := o.limit
	o.mu.Unlock()
	if told != nil {
		told(limit)
	}
}

// fitFrame returns the encoded frame of the start of fr's data that fits
// in room bytes of log (encoded is the size of all of it), or nil: the log
// fills up to its bound, not to wherever the last whole frame ended.
func fitFrame(fr api.Frame, room int64, encoded int) []byte {
	n := int(int64(len(fr.Data)) * room / int64(encoded))
	for n > 0 {
		b, err := json.Marshal(api.Frame{Stream: fr.Stream, Data: fr.Data[:n]})
		if err != nil {
			return nil
		}
		if int64(len(b)+1) <= room {
			return append(b, '\n')
		}
		n -= n/8 + 1
	}
	return nil
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

// EachFrame calls fn for each frame of the output log at path between
// offsets from and to (to < 0: to its end), reading the log as a stream:
// however long it is, only one frame is in memory at a time. No log: no
// frames. It stops at fn's first error and returns it.
func EachFrame(path string, from, to int64, fn func(api.Frame) error) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open job output log: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return fmt.Errorf("read job output log: %w", err)
	}
	var r io.Reader = f
	if to >= 0 {
		r = io.LimitReader(f, max(to-from, 0))
	}
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, line...) // a frame longer than the buffer
			continue
		}
		if len(long) > 0 {
			line = append(long, line...)
			long = long[:0]
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil // a partial last frame is one being written
			}
			return fmt.Errorf("read job output log: %w", err)
		}
		var fr api.Frame
		if json.Unmarshal(line, &fr) != nil {
			continue
		}
		if err := fn(fr); err != nil {
			return err
		}
	}
}

// EachOutputFrame calls fn for each stdout and stderr frame of the output
// log at path before offset to (not the frames that ended runs), streamed
// as EachFrame does.
func EachOutputFrame(path string, to int64, fn func(api.Frame) error) error {
	return EachFrame(path, 0, to, func(fr api.Frame) error {
		if fr.Stream == "" || len(fr.Data) == 0 {
			return nil
		}
		return fn(api.Frame{Stream: fr.Stream, Data: fr.Data})
	})
}
