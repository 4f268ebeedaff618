package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
)

// Progress of long operations (issue 15.4): an operation reports its
// phases, the pods done and the bytes written to a function the request's
// context carries, so that the protocol code stays the same whether or not
// a client watches; the server streams what it is told as frames.

type progressKey struct{}

// podsDoneKey carries the hook onNodes calls with a node's number of pods
// once that node has answered.
type podsDoneKey struct{}

func withProgress(ctx context.Context, fn func(api.Progress)) context.Context {
	return context.WithValue(ctx, progressKey{}, fn)
}

// podsDone tells the operation's progress, if any, that a node finished
// its pods.
func podsDone(ctx context.Context, n int) {
	if fn, ok := ctx.Value(podsDoneKey{}).(func(int)); ok {
		fn(n)
	}
}

// opProgress is one operation's progress, reported to the context's
// function (or nowhere). Its methods are safe for concurrent use and do
// nothing on a nil *opProgress.
type opProgress struct {
	fn func(api.Progress)
	t0 time.Time

	mu sync.Mutex
	p  api.Progress
}

// newProgress returns nil when nobody watches ctx's operation.
func newProgress(ctx context.Context, op, job string, pods int) *opProgress {
	fn, ok := ctx.Value(progressKey{}).(func(api.Progress))
	if !ok || fn == nil {
		return nil
	}
	return &opProgress{fn: fn, t0: time.Now(), p: api.Progress{Op: op, Job: job, Pods: pods}}
}

func (o *opProgress) update(change func(p *api.Progress)) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	change(&o.p)
	o.p.ElapsedMS = time.Since(o.t0).Milliseconds()
	o.fn(o.p)
}

// phase starts a phase: no pods of it done yet.
func (o *opProgress) phase(name string) {
	o.update(func(p *api.Progress) { p.Phase, p.PodsDone = name, 0 })
}

// bytes sets the bytes written so far.
func (o *opProgress) bytes(n int64) {
	o.update(func(p *api.Progress) { p.Bytes = n })
}

// watchNodes makes ctx count the pods of every node that answers into
// the current phase.
func (o *opProgress) watchNodes(ctx context.Context) context.Context {
	if o == nil {
		return ctx
	}
	return context.WithValue(ctx, podsDoneKey{}, func(n int) {
		o.update(func(p *api.Progress) { p.PodsDone += n })
	})
}

// pollBytes reports measure() every 250 ms, when it changed, until the
// returned function is called (which waits for the last report).
func (o *opProgress) pollBytes(measure func() (int64, error)) (stop func()) {
	if o == nil {
		return func() {}
	}
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		var last int64
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if n, err := measure(); err == nil && n != last {
					last = n
					o.bytes(n)
				}
			}
		}
	}()
	return func() { close(done); <-exited }
}

// frameSender writes NDJSON frames, the response's header with the first,
// so that a request refused before anything was sent still gets its status.
type frameSender struct {
	w       http.ResponseWriter
	flusher http.Flusher
	enc     *json.Encoder

	mu    sync.Mutex
	begun bool
}

func newFrameSender(w http.ResponseWriter) *frameSender {
	f, _ := w.(http.Flusher)
	return &frameSender{w: w, flusher: f, enc: json.NewEncoder(w)}
}

func (s *frameSender) send(f api.Frame) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.begun {
		s.w.Header().Set("Content-Type", "application/x-ndjson")
		s.w.WriteHeader(http.StatusOK)
		s.begun = true
	}
	if s.enc.Encode(f) == nil && s.flusher != nil {
		s.flusher.Flush()
	}
}

func (s *frameSender) started() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.begun
}

// progressStream answers a request that asked for progress: progress
// frames while op runs, then the frame op returns, or an error frame. An
// error before any progress is returned instead, to be answered with its
// status (a job this agent does not know then goes to orPeers). The
// operation is not cut short when the client goes away.
func (a *Agent) progressStream(w http.ResponseWriter, r *http.Request, op func(ctx context.Context) (api.Frame, error)) error {
	fs := newFrameSender(w)
	ctx := withProgress(context.WithoutCancel(r.Context()), func(p api.Progress) { fs.send(api.Frame{Progress: &p}) })
	f, err := op(ctx)
	if err != nil {
		if !fs.started() {
			return err
		}
		f = api.Frame{Error: err.Error()}
	}
	fs.send(f)
	return nil
}
