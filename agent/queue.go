package agent

// cruz status --all: the jobs of every node of the cluster, like squeue.
// The agent a user asks collects its own jobs and asks every peer in
// cluster.peers at once, for the same user, with a short timeout: a node
// that does not answer is named, not waited for. Each agent decides what
// the user may see of the jobs it coordinates (queueLocal).

import (
	"context"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/config"
)

// queueTimeout is how long a peer gets to answer.
const queueTimeout = 3 * time.Second

// handleQueue answers GET /v1/queue: the whole cluster's jobs, or with
// ?local=1 (what agents ask each other) this agent's own.
func (a *Agent) handleQueue(w http.ResponseWriter, r *http.Request, c caller) error {
	if r.URL.Query().Get("local") == "1" {
		writeJSON(w, http.StatusOK, api.Queue{Jobs: a.queueLocal(c)})
		return nil
	}
	writeJSON(w, http.StatusOK, a.queue(r.Context(), c))
	return nil
}

// queueLocal lists the jobs this agent coordinates as c may see them: id,
// owner, state, nodes and times of every job; the name and command only of
// c's own jobs (all of them for root), or of every job if the config says so.
func (a *Agent) queueLocal(c caller) []api.QueueJob {
	everyone := a.cfg.Status.ShowCommands == config.ShowCommandsEveryone
	out := []api.QueueJob{}
	for _, j := range a.jobList() {
		j.mu.Lock()
		rec := j.rec
		j.mu.Unlock()
		q := api.QueueJob{ID: rec.ID, User: rec.User, UID: rec.UID, State: rec.State, Coordinator: a.node,
			Created: rec.Created, Updated: rec.Updated, Nodes: []string{}}
		for _, p := range rec.Pods {
			if n := nodeOr(p.Node, a.node); !slices.Contains(q.Nodes, n) {
				q.Nodes = append(q.Nodes, n)
			}
		}
		sort.Strings(q.Nodes)
		if everyone || c.UID == 0 || c.UID == rec.UID {
			q.Name, q.Argv = rec.Name, rec.Request.Argv
		}
		out = append(out, q)
	}
	return out
}

// queue is every node's queueLocal for c, oldest job first.
func (a *Agent) queue(ctx context.Context, c caller) api.Queue {
	q := api.Queue{Jobs: a.queueLocal(c)}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, node := range a.nodes()[1:] {
		wg.Add(1)
		go func(node string) {
			defer wg.Done()
			var l api.Queue
			nc, err := a.conn(node, c)
			if err == nil {
				cctx, cancel := context.WithTimeout(ctx, queueTimeout)
				err = nc.Call(cctx, http.MethodGet, "/v1/queue?local=1", nil, &l)
				cancel()
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				q.Unreachable = append(q.Unreachable, api.NodeError{Node: node, Error: firstLine(err.Error())})
				return
			}
			q.Jobs = append(q.Jobs, l.Jobs...)
		}(node)
	}
	wg.Wait()
	sort.Slice(q.Unreachable, func(i, k int) bool { return q.Unreachable[i].Node < q.Unreachable[k].Node })
	sort.SliceStable(q.Jobs, func(i, k int) bool {
		if !q.Jobs[i].Created.Equal(q.Jobs[k].Created) {
			return q.Jobs[i].Created.Before(q.Jobs[k].Created)
		}
		return q.Jobs[i].ID < q.Jobs[k].ID
	})
	return q
}
