package launcher

// cruz status --all: the cluster's jobs, like squeue.

import (
	"fmt"
	"io"
	"os/user"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
)

// jobStates lists the states -t takes.
var jobStates = []api.JobState{api.StateStarting, api.StateRunning, api.StateRestoring, api.StateStopped,
	api.StateExited, api.StateFailed, api.StateLost, api.StateCancelled}

// parseStates parses -t's comma-separated states, in any case.
func parseStates(s string) ([]api.JobState, error) {
	var out []api.JobState
	for _, f := range strings.Split(s, ",") {
		st := api.JobState(strings.ToLower(strings.TrimSpace(f)))
		if !slices.Contains(jobStates, st) {
			names := make([]string, len(jobStates))
			for i, x := range jobStates {
				names[i] = string(x)
			}
			return nil, fmt.Errorf("-t %q: %q is not a job state; give one or more of %s, separated by commas", s, f, strings.Join(names, ", "))
		}
		out = append(out, st)
	}
	return out, nil
}

// checkUser makes sure -u names a user of this machine, so that a typo is
// not taken for a user without jobs.
func checkUser(name string) error {
	if _, err := user.Lookup(name); err != nil {
		return fmt.Errorf("-u %q: no such user on this machine", name)
	}
	return nil
}

// filterQueue keeps the jobs of user (any if "") in one of states (any if
// empty).
func filterQueue(jobs []api.QueueJob, userName string, states []api.JobState) []api.QueueJob {
	out := []api.QueueJob{}
	for _, j := range jobs {
		if userName != "" && j.User != userName {
			continue
		}
		if len(states) > 0 && !slices.Contains(states, j.State) {
			continue
		}
		out = append(out, j)
	}
	return out
}

// age is how long ago t was, squeue-style: D-HH:MM:SS or MM:SS.
func age(now, t time.Time) string {
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
	s := int(d / time.Second)
	days, h, m, sec := s/86400, s/3600%24, s/60%60, s%60
	switch {
	case days > 0:
		return fmt.Sprintf("%d-%02d:%02d:%02d", days, h, m, sec)
	case h > 0:
		return fmt.Sprintf("%d:%02d:%02d", h, m, sec)
	default:
		return fmt.Sprintf("%d:%02d", m, sec)
	}
}

// printQueue prints the jobs as a table; a job whose name and command the
// caller may not see shows "-" for them.
func printQueue(w io.Writer, jobs []api.QueueJob, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tUSER\tSTATE\tNODES\tAGE\tNAME\tCOMMAND")
	for _, j := range jobs {
		nodes := strings.Join(j.Nodes, ",")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.User, j.State, dash(nodes), age(now, j.Created),
			dash(j.Name), dash(strings.Join(j.Argv, " ")))
	}
	tw.Flush()
}

// warnUnreachable names the nodes that did not answer.
func warnUnreachable(w io.Writer, q api.Queue) {
	for _, n := range q.Unreachable {
		fmt.Fprintf(w, "cruz: node %s did not answer; its jobs are not listed: %s\n", n.Node, n.Error)
	}
}
