package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
)

// Following the output of a job's pods on other nodes: each node keeps its
// own output log of the job's pods there, and the coordinator copies it into
// the job's log from the offset it has reached.

// follower copies what a job's pods on another node print into the job's
// output log, from that node's log of it.
type follower struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	off    int64
	moved  chan struct{} // closed and replaced when off grows
}

// follow starts following the job's output on node, unless it is this
// node (its pods write to the job's log directly) or already followed.
func (a *Agent) follow(j *job, node string) {
	if node == "" || node == a.node {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.followers == nil {
		j.followers = map[string]*follower{}
	}
	if _, ok := j.followers[node]; ok {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &follower{cancel: cancel, done: make(chan struct{}), moved: make(chan struct{})}
	j.followers[node] = f
	go a.runFollower(ctx, j, node, f)
}

func (a *Agent) runFollower(ctx context.Context, j *job, node string, f *follower) {
	defer close(f.done)
	for ctx.Err() == nil {
		err := a.followOnce(ctx, j, node, f)
		if ctx.Err() != nil {
			return
		}
		a.log.Debug("following output", "job", j.id(), "node", node, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (a *Agent) followOnce(ctx context.Context, j *job, node string, f *follower) error {
	nc, err := a.conn(node, j.owner())
	if err != nil {
		return err
	}
	f.mu.Lock()
	from := f.off
	f.mu.Unlock()
	body, err := nc.Output(ctx, j.id(), from)
	if err != nil {
		return err
	}
	defer body.Close()
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var fr api.NodeFrame
		if err := json.Unmarshal(sc.Bytes(), &fr); err != nil {
			return err
		}
		if fr.Stream != "" && fr.Data != nil {
			a.emit(j, fr.Stream, fr.Data)
		}
		f.mu.Lock()
		f.off = fr.End
		close(f.moved)
		f.moved = make(chan struct{})
		f.mu.Unlock()
	}
	return sc.Err()
}

// followDrainTimeout bounds the wait for a node's last output.
const followDrainTimeout = 5 * time.Second

// unfollow waits until the follower of node has copied the output up to end
// (the node's log offset once its pods were gone), then stops it.
func (a *Agent) unfollow(j *job, node string, end int64) {
	j.mu.Lock()
	f := j.followers[node]
	delete(j.followers, node)
	j.mu.Unlock()
	if f == nil {
		return
	}
	deadline := time.After(followDrainTimeout)
	for {
		f.mu.Lock()
		off, moved := f.off, f.moved
		f.mu.Unlock()
		if off >= end {
			break
		}
		select {
		case <-moved:
			continue
		case <-deadline:
			a.log.Warn("output of a node not fully copied", "job", j.id(), "node", node, "have", off, "end", end)
		}
		break
	}
	f.cancel()
	<-f.done
}

// stopFollowers stops every follower without waiting for output.
func (a *Agent) stopFollowers(j *job) {
	j.mu.Lock()
	fs := j.followers
	j.followers = nil
	j.mu.Unlock()
	for _, f := range fs {
		f.cancel()
		<-f.done
	}
}
