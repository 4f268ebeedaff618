package agent

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

// outputLog is a job's output: every frame (a chunk of stdout or stderr, or
// the event that ended a run) appended as one JSON line to a file in the
// job's run directory. Clients follow it from an offset, so a client that
// attaches late, or a restart's client, sees each byte exactly once and in
// order, and the agent holds no output in memory.
type outputLog struct {
	path    string
	mu      sync.Mutex
	f       *os.File
	size    int64
	closed  bool
	changed chan struct{} // closed and replaced at every append
}

func openOutputLog(path string, uid uint32) (*outputLog, error) {
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
	return &outputLog{path: path, f: f, size: st.Size(), changed: make(chan struct{})}, nil
}

// append writes one frame and wakes the followers.
func (o *outputLog) append(fr api.Frame) {
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

// offset is where the next frame will start.
func (o *outputLog) offset() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.size
}

func (o *outputLog) close() {
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

// follow calls fn for every frame from offset from on, until a terminal frame
// (which fn also gets), ctx ends, or fn returns an error.
func (o *outputLog) follow(ctx context.Context, from int64, fn func(api.Frame) error) error {
	return o.followOffsets(ctx, from, func(f api.Frame, _ int64) error { return fn(f) })
}

// followOffsets is follow that also passes the offset each frame ends at.
func (o *outputLog) followOffsets(ctx context.Context, from int64, fn func(api.Frame, int64) error) error {
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
