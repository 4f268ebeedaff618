package agent

// How the coordinator reaches a node: its own node by a direct call into
// internal/node, the others over their TCP API, signed with the cluster key
// for the identity it acts for. Both behind nodeConn, so that the protocol
// above (checkpoint, restart, migration, recovery) can be tested against
// fake nodes (conn_test.go's fakes).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/node"
)

// nodeConn is a connection to one node's agent, acting for one identity.
type nodeConn interface {
	// Do carries out a node operation on the node.
	Do(ctx context.Context, op api.NodeOp, req api.NodeRequest) (api.NodeResponse, error)
	// Output streams the node's output log of a job coordinated elsewhere,
	// from offset from, as api.NodeFrame lines.
	Output(ctx context.Context, job string, from int64) (io.ReadCloser, error)
	// Ping tells whether the node's agent answers.
	Ping(ctx context.Context) error
	// Job asks the node's agent what it knows of a job.
	Job(ctx context.Context, ref string) (api.Job, error)
	// Call passes a request of the API on to the node's agent.
	Call(ctx context.Context, method, path string, in, out any) error
}

// dialer makes node connections: dialNode for the real agent, fakes in tests.
type dialer func(node string, id api.Identity) (nodeConn, error)

// localConn is this node, called directly.
type localConn struct {
	n  *node.Node
	id api.Identity
}

func (l localConn) Do(ctx context.Context, op api.NodeOp, req api.NodeRequest) (api.NodeResponse, error) {
	return l.n.Do(ctx, l.id, op, req)
}

var errLocal = errors.New("not asked of the agent's own node")

func (l localConn) Output(context.Context, string, int64) (io.ReadCloser, error) {
	return nil, errLocal
}
func (l localConn) Ping(context.Context) error                           { return nil }
func (l localConn) Job(context.Context, string) (api.Job, error)         { return api.Job{}, errLocal }
func (l localConn) Call(context.Context, string, string, any, any) error { return errLocal }

// remoteConn is another node's agent over its TCP API.
type remoteConn struct {
	node string
	c    *api.Client
	// criuTimeout is what a dump or restore may take on top of nodeTimeout.
	criuTimeout time.Duration
}

func (r remoteConn) Do(ctx context.Context, op api.NodeOp, req api.NodeRequest) (api.NodeResponse, error) {
	// A node that does not answer must not hold the coordinator (and the
	// job's traffic) for a TCP timeout: every operation but a wait is
	// bounded.
	if _, ok := ctx.Deadline(); !ok && op != api.OpWait {
		limit := nodeTimeout
		if op == api.OpDump || op == api.OpRestore {
			limit += r.criuTimeout
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	var resp api.NodeResponse
	if err := r.c.Call(ctx, http.MethodPost, "/v1/node/"+string(op), req, &resp); err != nil {
		return resp, fmt.Errorf("node %s: %w", r.node, err)
	}
	return resp, nil
}

func (r remoteConn) Output(ctx context.Context, job string, from int64) (io.ReadCloser, error) {
	return r.c.OpenStream(ctx, http.MethodGet, fmt.Sprintf("/v1/node/jobs/%s/output?from=%d", url.PathEscape(job), from))
}

func (r remoteConn) Ping(ctx context.Context) error {
	_, err := r.c.Version(ctx)
	return err
}

func (r remoteConn) Job(ctx context.Context, ref string) (api.Job, error) {
	var j api.Job
	err := r.c.Call(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(ref), nil, &j)
	return j, err
}

func (r remoteConn) Call(ctx context.Context, method, path string, in, out any) error {
	return r.c.Call(ctx, method, path, in, out)
}

// dialNode is the agent's dialer: this node directly, its peers over TCP
// (one client per node and identity, kept).
func (a *Agent) dialNode(nodeName string, id api.Identity) (nodeConn, error) {
	if nodeName == "" || nodeName == a.node {
		return localConn{n: a.local, id: id}, nil
	}
	for _, p := range a.cfg.PeerList() {
		if p.Name != nodeName {
			continue
		}
		key := fmt.Sprintf("%s/%d/%d/%v/%s", nodeName, id.UID, id.GID, id.Groups, id.User)
		a.mu.Lock()
		cl, ok := a.clients[key]
		if !ok {
			cl = api.NewSignedClient(p.Addr.String(), nodeName, a.key, id)
			a.clients[key] = cl
		}
		a.mu.Unlock()
		return remoteConn{node: nodeName, c: cl, criuTimeout: a.cfg.CRIU.Timeout.Duration}, nil
	}
	return nil, a.unknownNode(nodeName)
}

// conn returns the connection to node acting for c.
func (a *Agent) conn(nodeName string, c caller) (nodeConn, error) { return a.dial(nodeName, c) }

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

// unknownNode is the error for a node name the cluster does not have.
func (a *Agent) unknownNode(node string) error {
	return api.Errorf(api.ErrInvalid, "unknown node %q: this cluster's nodes are %s (cluster.peers in the agents' config)", node, strings.Join(a.nodes(), ", "))
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
			return api.Errorf(api.ErrInvalid, "node %s is listed twice in --nodes", n)
		}
		seen[n] = true
	}
	return nil
}

// owner is the identity the coordinator acts for on the job's behalf.
func (j *job) owner() caller {
	j.mu.Lock()
	defer j.mu.Unlock()
	return caller{UID: j.rec.UID, GID: j.rec.GID, Groups: j.rec.Groups, User: j.rec.User}
}
