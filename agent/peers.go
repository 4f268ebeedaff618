package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"slices"
	"sync"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
)

// Asking the other agents about jobs this one does not know, and passing a
// user's requests on to the agent that coordinates the job.

// peerJob is what another node's agent tells of a job.
type peerJob struct {
	node string
	job  api.Job
}

// peerJobs asks every other node at once, briefly (a node that is down must
// not hold up the answer), what it knows of job ref, for c. It returns the
// answers of those that know it: one where the job runs (with pods) first,
// without waiting for the rest then; the others by how recently it changed.
func (a *Agent) peerJobs(ctx context.Context, c caller, ref string) []peerJob {
	peers := a.nodes()[1:]
	found := make(chan *peerJob, len(peers))
	for _, node := range peers {
		go func(node string) {
			nc, err := a.conn(node, c)
			if err != nil {
				found <- nil
				return
			}
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			j, err := nc.Job(cctx, ref)
			if err != nil {
				found <- nil
				return
			}
			found <- &peerJob{node: node, job: j}
		}(node)
	}
	var all []peerJob
	for range peers {
		k := <-found
		if k == nil {
			continue
		}
		all = append(all, *k)
		if k.job.State.HoldsPods() {
			break
		}
	}
	slices.SortFunc(all, func(x, y peerJob) int {
		if hx, hy := x.job.State.HoldsPods(), y.job.State.HoldsPods(); hx != hy {
			if hx {
				return -1
			}
			return 1
		}
		return y.job.Updated.Compare(x.job.Updated)
	})
	return all
}

// runningOn is the node among answers where the job runs (with pods), or "".
func runningOn(answers []peerJob) string {
	if len(answers) > 0 && answers[0].job.State.HoldsPods() {
		return answers[0].node
	}
	return ""
}

// peersHolding asks the other nodes whether one of them runs job id (with
// pods), so that a job is never restarted while it runs elsewhere. It returns
// the node that does, or "".
func (a *Agent) peersHolding(ctx context.Context, c caller, id string) string {
	return runningOn(a.peerJobs(ctx, c, id))
}

// orPeers answers a request about a job this agent does not know from the
// agent that does: ?at=NODE names it, else every other node is asked in
// turn. Only a user's own request (unix socket) is passed on, signed for
// that user, never one that came from another agent.
func (a *Agent) orPeers(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, c caller) error {
		body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
		if err != nil {
			return api.Errorf(api.ErrInvalid, "read request: %v", err)
		}
		at := r.URL.Query().Get("at")
		if at != "" && !a.isNode(at) {
			return a.unknownNode(at)
		}
		if at == "" || at == a.node || fromPeer(r.Context()) {
			r.Body = io.NopCloser(bytes.NewReader(body))
			err = h(w, r, c)
			if !errors.Is(err, api.ErrNotFound) || fromPeer(r.Context()) || at == a.node {
				return err
			}
		}
		nodes := []string{at}
		if at == "" {
			nodes = nil
			for _, o := range a.peerJobs(r.Context(), c, r.PathValue("job")) {
				nodes = append(nodes, o.node)
			}
		}
		var in any
		if len(body) > 0 {
			in = json.RawMessage(body)
		}
		// A request for a progress stream is passed on without it (the
		// answer is read whole), and the result sent as the stream's one
		// frame, named by the operation (the path's last segment).
		progress := false
		if len(body) > 0 {
			var m map[string]json.RawMessage
			if json.Unmarshal(body, &m) == nil && string(m["progress"]) == "true" {
				delete(m, "progress")
				if b, err := json.Marshal(m); err == nil {
					in, progress = json.RawMessage(b), true
				}
			}
		}
		for _, node := range nodes {
			nc, cerr := a.conn(node, c)
			if cerr != nil {
				continue
			}
			var out json.RawMessage
			// The escaped path, as the user sent it: a job name with "%2F"
			// must stay one segment on the other agent too.
			ferr := nc.Call(context.WithoutCancel(r.Context()), r.Method, r.URL.EscapedPath(), in, &out)
			var ae *api.Error
			switch {
			case ferr == nil && progress:
				w.Header().Set("Content-Type", "application/x-ndjson")
				w.WriteHeader(http.StatusOK)
				_, _ = fmt.Fprintf(w, "{%q:%s}\n", path.Base(r.URL.Path), out)
				return nil
			case ferr == nil:
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write(out)
				return nil
			case errors.As(ferr, &ae) && ae.Status == http.StatusNotFound && at == "":
				continue
			case errors.As(ferr, &ae):
				writeJSON(w, ae.Status, api.ErrorBody{Error: ae.Message})
				return nil
			default:
				return fmt.Errorf("ask node %s: %w", node, ferr)
			}
		}
		if err == nil {
			err = api.Errorf(api.ErrNotFound, "job %q does not exist on node %s", r.PathValue("job"), at)
		}
		return err
	}
}

// liveNodes returns the nodes whose agents answer within timeout; skip (a
// node known to be silent) is not asked, so nobody waits for it.
func (a *Agent) liveNodes(timeout time.Duration, skip string) map[string]bool {
	var mu sync.Mutex
	live := map[string]bool{a.node: true}
	var wg sync.WaitGroup
	for _, n := range a.nodes()[1:] {
		if n == skip {
			continue
		}
		wg.Add(1)
		go func(n string) {
			defer wg.Done()
			nc, err := a.conn(n, rootCaller)
			if err != nil {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			if err := nc.Ping(ctx); err == nil {
				mu.Lock()
				live[n] = true
				mu.Unlock()
			}
		}(n)
	}
	wg.Wait()
	return live
}
