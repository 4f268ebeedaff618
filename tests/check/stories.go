package check

import (
	"fmt"
	"slices"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/cluster"
)

// Count is the number of events of kind.
func Count(evs []api.Event, kind api.EventKind) int {
	n := 0
	for _, e := range evs {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

func kinds(evs []api.Event) []api.EventKind {
	ks := make([]api.EventKind, len(evs))
	for i, e := range evs {
		ks[i] = e.Kind
	}
	return ks
}

// Spread checks where a job started: its ranks on every node but the
// spares (the last nspares of node1..nodeN), its mpiexec pod on node1, the
// spares held by the job and a policy in force.
func Spread(job api.Job, seen map[string]PodSeen, nnodes, nspares int) []string {
	want := map[string]bool{}
	for i := 1; i <= nnodes-nspares; i++ {
		want[fmt.Sprintf("node%d", i)] = true
	}
	var spares []string
	for i := nnodes - nspares + 1; i <= nnodes; i++ {
		spares = append(spares, fmt.Sprintf("node%d", i))
	}
	got, mpx := map[string]bool{}, []string{}
	for name, p := range seen {
		if isMpiexec(name) {
			mpx = append(mpx, p.Node)
		} else {
			got[p.Node] = true
		}
	}
	var bad []string
	if !sameKeys(got, want) || !slices.Equal(mpx, []string{"node1"}) {
		bad = append(bad, fmt.Sprintf("ranks on %v (expected all of %v), mpiexec on %v (expected node1)", sortedKeys(got), sortedKeys(want), mpx))
	}
	if !slices.Equal(job.Spares, spares) {
		bad = append(bad, fmt.Sprintf("the job's spares are %v, expected %v", job.Spares, spares))
	}
	if job.Policy == "" {
		bad = append(bad, "the job has no policy in cruz status --json")
	}
	return bad
}

func isMpiexec(pod string) bool { return len(pod) > 8 && pod[len(pod)-8:] == "-mpiexec" }

// Migrated checks that pod runs on node to.
func Migrated(seen map[string]PodSeen, pod, to string) []string {
	if p, ok := seen[pod]; !ok || p.Node != to {
		return []string{fmt.Sprintf("%s runs on %q, not on %s where it was migrated", pod, p.Node, to)}
	}
	return nil
}

// PodsOn lists the pods seen on node, sorted.
func PodsOn(seen map[string]PodSeen, node string) []string {
	var ps []string
	for _, n := range sortedKeys(seen) {
		if seen[n].Node == node {
			ps = append(ps, n)
		}
	}
	return ps
}

// ClusterFailed checks cruz cluster status after `cruz cluster fail node`:
// that node failed, every other alive.
func ClusterFailed(st cluster.State, node string) []string {
	var bad []string
	for _, n := range st.Nodes {
		switch {
		case (n.Name == node) != n.Failed:
			bad = append(bad, fmt.Sprintf("%s: failed is %v", n.Name, n.Failed))
		case n.Name != node && !n.Alive:
			bad = append(bad, n.Name+" is not alive")
		}
	}
	return bad
}

// Recovered checks where a rollback after the failure of node failed put
// the pods: the failed node's on spare, the others where they were, one
// restart counted and the spare no longer held.
func Recovered(before, after map[string]PodSeen, job api.Job, failed, spare string) []string {
	var bad []string
	for _, n := range sortedKeys(before) {
		want := before[n].Node
		if want == failed {
			want = spare
		}
		if after[n].Node != want {
			bad = append(bad, fmt.Sprintf("%s runs on %q, expected %s (it was on %s)", n, after[n].Node, want, before[n].Node))
		}
	}
	if job.Restarts != 1 {
		bad = append(bad, fmt.Sprintf("cruz status says restarts %d, expected 1", job.Restarts))
	}
	if len(job.Spares) > 0 {
		bad = append(bad, fmt.Sprintf("the job still holds spares %v after using %s", job.Spares, spare))
	}
	return bad
}

// RecoveryStory checks the event log of a job that lost node failed at
// failAt and ran to its end: one failure (blamed on that node, after it
// failed), one restarting, one recovered (from the last checkpoint taken
// before the failure) and one output event (the repeated lines), in that
// order, and exited last.
func RecoveryStory(evs []api.Event, failed string, failAt time.Time) []string {
	ks := kinds(evs)
	var bad []string
	for _, k := range []api.EventKind{api.EventFailure, api.EventRestarting, api.EventRecovered, api.EventOutput} {
		if n := Count(evs, k); n != 1 {
			bad = append(bad, fmt.Sprintf("%d %s events, expected 1", n, k))
		}
	}
	if bad == nil {
		f, r := slices.Index(ks, api.EventFailure), slices.Index(ks, api.EventRestarting)
		rec, out := slices.Index(ks, api.EventRecovered), slices.Index(ks, api.EventOutput)
		if !(f < r && r < rec && r < out) {
			bad = append(bad, fmt.Sprintf("the events are not in the order failure, restarting, recovered (output after restarting): %v", ks))
		}
		if evs[f].Node != failed {
			bad = append(bad, fmt.Sprintf("the failure is blamed on %q, not %s", evs[f].Node, failed))
		}
		if evs[f].Time.Before(failAt) {
			bad = append(bad, "the failure event came before "+failed+" failed")
		}
		var last string
		for _, e := range evs[:f] {
			if e.Kind == api.EventCheckpoint {
				last = e.Checkpoint
			}
		}
		if last == "" || evs[rec].Checkpoint != last {
			bad = append(bad, fmt.Sprintf("recovered from %q, not from the last checkpoint before the failure (%q)", evs[rec].Checkpoint, last))
		}
	}
	if len(ks) == 0 || ks[len(ks)-1] != api.EventExited {
		bad = append(bad, fmt.Sprintf("the last event is not exited: %v", ks))
	}
	return bad
}

// Resumed checks the event log of a Slurm step that was requeued once and
// resumed from a checkpoint: started, cancelled, restarted and exited once
// each. It returns the restarted event.
func Resumed(evs []api.Event) (api.Event, []string) {
	var bad []string
	for _, k := range []api.EventKind{api.EventStarted, api.EventCancelled, api.EventRestarted, api.EventExited} {
		if n := Count(evs, k); n != 1 {
			bad = append(bad, fmt.Sprintf("%d %s events, expected 1: %v", n, k, kinds(evs)))
		}
	}
	if bad != nil {
		return api.Event{}, bad
	}
	return evs[slices.Index(kinds(evs), api.EventRestarted)], nil
}
