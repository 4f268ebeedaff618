package agent

// The coordinator side of multi-node jobs: which node holds which pod, how
// the coordinator reaches a node (its own directly, the others over their
// TCP API), and how the output of pods on other nodes reaches the job's log.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
)

// nodeClient performs node operations on one node for one job's owner.
type nodeClient struct {
	a      *Agent
	node   string
	c      caller
	remote *api.Client // nil for this node
}

func (n nodeClient) do(ctx context.Context, op string, req nodeReq) (nodeResp, error) {
	if n.remote == nil {
		return n.a.nodeOp(ctx, n.c, op, req)
	}
	// A node that does not answer must not hold the coordinator (and the
	// job's traffic) for a TCP timeout: every operation but a wait is
	// bounded.
	if _, ok := ctx.Deadline(); !ok && op != opWait {
		limit := nodeTimeout
		if op == opDump || op == opRestore {
			limit = n.a.cfg.CRIU.Timeout.Duration + nodeTimeout
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	var resp nodeResp
	err := n.remote.Call(ctx, http.MethodPost, "/v1/node/"+op, req, &resp)
	if err != nil {
		return resp, fmt.Errorf("node %s: %w", n.node, err)
	}
	return resp, nil
}

// owner is the identity the coordinator acts for on the job's behalf.
func (j *job) owner() caller {
	j.mu.Lock()
	defer j.mu.Unlock()
	return caller{UID: j.rec.UID, GID: j.rec.GID, Groups: j.rec.Groups, User: j.rec.User}
}

// nodes lists the cluster's nodes: this one, then its peers by name.
func (a *Agent) nodes() []string {
	out := []string{a.node}
	for _, p := range a.cfg.PeerList() {
		if p.Name != a.node {
			out = append(out, p.Name)
		}
	}
	sort.Strings(out[1:])
	return out
}

// client returns the node client for node, acting for c.
func (a *Agent) client(node string, c caller) (nodeClient, error) {
	if node == "" || node == a.node {
		return nodeClient{a: a, node: a.node, c: c}, nil
	}
	for _, p := range a.cfg.PeerList() {
		if p.Name == node {
			key := fmt.Sprintf("%s/%d/%d/%v/%s", node, c.UID, c.GID, c.Groups, c.User)
			a.mu.Lock()
			cl, ok := a.clients[key]
			if !ok {
				cl = api.NewSignedClient(p.Addr.String(), a.key, api.Identity{UID: c.UID, GID: c.GID, Groups: c.Groups, User: c.User})
				a.clients[key] = cl
			}
			a.mu.Unlock()
			return nodeClient{a: a, node: node, c: c, remote: cl}, nil
		}
	}
	return nodeClient{}, a.unknownNode(node)
}

// unknownNode is the error for a node name the cluster does not have.
func (a *Agent) unknownNode(node string) error {
	return errorf(errBadRequest, "unknown node %q: this cluster's nodes are %s (cluster.peers in the agents' config)", node, strings.Join(a.nodes(), ", "))
}

// isNode tells whether name is a node of the cluster.
func (a *Agent) isNode(name string) bool {
	for _, n := range a.nodes() {
		if n == name {
			return true
		}
	}
	return false
}

// checkNodes checks that every name is a node of the cluster, once.
func (a *Agent) checkNodes(names []string) error {
	seen := map[string]bool{}
	for _, n := range names {
		if !a.isNode(n) {
			return a.unknownNode(n)
		}
		if seen[n] {
			return errorf(errBadRequest, "node %s is listed twice in --nodes", n)
		}
		seen[n] = true
	}
	return nil
}

// byNode groups the job's pods by the node they are placed on.
func (j *job) byNode() map[string][]string {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := map[string][]string{}
	for _, p := range j.rec.Pods {
		out[p.Node] = append(out[p.Node], p.Name)
	}
	return out
}

// onNodes runs op on every node that holds pods of the job, at once, and
// returns the answers by node; the error names every node that failed.
func (a *Agent) onNodes(ctx context.Context, j *job, op string, mk func(node string, pods []string) nodeReq) (map[string]nodeResp, error) {
	return a.onNodesWhere(ctx, j, nil, op, mk)
}

// onNodesWhere is onNodes on the nodes for which keep is true (all if nil).
func (a *Agent) onNodesWhere(ctx context.Context, j *job, keep func(string) bool, op string, mk func(node string, pods []string) nodeReq) (map[string]nodeResp, error) {
	groups := j.byNode()
	for node := range groups {
		if keep != nil && !keep(node) {
			delete(groups, node)
		}
	}
	var mu sync.Mutex
	out := map[string]nodeResp{}
	var errs []error
	var wg sync.WaitGroup
	for node, pods := range groups {
		wg.Add(1)
		go func(node string, pods []string) {
			defer wg.Done()
			nc, err := a.client(node, j.owner())
			var resp nodeResp
			if err == nil {
				resp, err = nc.do(ctx, op, mk(node, pods))
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			out[node] = resp
		}(node, pods)
	}
	wg.Wait()
	sort.Slice(errs, func(i, k int) bool { return errs[i].Error() < errs[k].Error() })
	return out, errors.Join(errs...)
}

// placeRanks spreads np ranks over nodes in blocks (ranks 0..k-1 on the
// first node, and so on), as MPI users expect from a block distribution.
func placeRanks(np int, nodes []string) []string {
	out := make([]string, np)
	for r := 0; r < np; r++ {
		out[r] = nodes[r*len(nodes)/np]
	}
	return out
}

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
	nc, err := a.client(node, j.owner())
	if err != nil {
		return err
	}
	f.mu.Lock()
	from := f.off
	f.mu.Unlock()
	body, err := nc.remote.OpenStream(ctx, http.MethodGet, fmt.Sprintf("/v1/node/jobs/%s/output?from=%d", url.PathEscape(j.id()), from))
	if err != nil {
		return err
	}
	defer body.Close()
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var fr nodeFrame
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
			nc, err := a.client(node, c)
			if err != nil {
				found <- nil
				return
			}
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			var j api.Job
			if err := nc.remote.Call(cctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(ref), nil, &j); err != nil {
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
		if holdsPods(k.job.State) {
			break
		}
	}
	slices.SortFunc(all, func(x, y peerJob) int {
		if hx, hy := holdsPods(x.job.State), holdsPods(y.job.State); hx != hy {
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
	if len(answers) > 0 && holdsPods(answers[0].job.State) {
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

// rootCaller is the agent acting as root (for itself, not for a user).
var rootCaller = caller{UID: 0, GID: 0, User: "root"}
