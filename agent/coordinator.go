package agent

// The coordinator side of multi-node jobs: which node holds which pod, how
// the coordinator reaches a node (its own directly, the others over their
// TCP API), and how the output of pods on other nodes reaches the job's log.

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/cruz-hpc/cruz/internal/api"
)

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
func (a *Agent) onNodes(ctx context.Context, j *job, op api.NodeOp, mk func(node string, pods []string) api.NodeRequest) (map[string]api.NodeResponse, error) {
	return a.onNodesWhere(ctx, j, nil, op, mk)
}

// onNodesWhere is onNodes on the nodes for which keep is true (all if nil).
func (a *Agent) onNodesWhere(ctx context.Context, j *job, keep func(string) bool, op api.NodeOp, mk func(node string, pods []string) api.NodeRequest) (map[string]api.NodeResponse, error) {
	groups := j.byNode()
	for node := range groups {
		if keep != nil && !keep(node) {
			delete(groups, node)
		}
	}
	var mu sync.Mutex
	out := map[string]api.NodeResponse{}
	var errs []error
	var wg sync.WaitGroup
	for node, pods := range groups {
		wg.Add(1)
		go func(node string, pods []string) {
			defer wg.Done()
			nc, err := a.conn(node, j.owner())
			var resp api.NodeResponse
			if err == nil {
				resp, err = nc.Do(ctx, op, mk(node, pods))
			}
			if err == nil {
				podsDone(ctx, len(pods)) // for a watched operation's progress
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

// rankGroup is the ranks one rank pod holds: Count consecutive ranks from
// First, all on Node.
type rankGroup struct {
	First, Count int
	Node         string
}

// groupRanks puts the ranks, placed on nodes by rank (placed[r]), into
// pods of at most perPod consecutive ranks of one node (cruz run
// --ranks-per-pod); perPod < 2 is a pod per rank.
func groupRanks(placed []string, perPod int) []rankGroup {
	if perPod < 1 {
		perPod = 1
	}
	var out []rankGroup
	for r, node := range placed {
		if n := len(out); n > 0 && out[n-1].Node == node && out[n-1].Count < perPod {
			out[n-1].Count++
			continue
		}
		out = append(out, rankGroup{First: r, Count: 1, Node: node})
	}
	return out
}

// rankPodName is the name of the pod holding g: JOB-rR for one rank,
// JOB-rA-B for ranks A to B.
func rankPodName(job string, g rankGroup) string {
	if g.Count > 1 {
		return fmt.Sprintf("%s-r%d-%d", job, g.First, g.First+g.Count-1)
	}
	return fmt.Sprintf("%s-r%d", job, g.First)
}
