package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/cluster"
	"github.com/cruz-hpc/cruz/tests/check"
)

// cut shortens a long message to its start and its end.
func cut(s string) string {
	if len(s) <= 100 {
		return s
	}
	return s[:58] + " ... " + s[len(s)-37:]
}

// events prints "<events of KIND> <events in all>"; with SHOW and T0 it
// also writes the events from index SHOW on, timed from T0, to events.new
// beside the event file.
func events(a []string) ([]string, error) {
	var l api.EventList
	if err := load(a[0], &l); err != nil {
		return nil, err
	}
	fmt.Println(check.Count(l.Events, api.EventKind(a[1])), len(l.Events))
	if len(a) < 4 {
		return nil, nil
	}
	from, err := atoi(a[2])
	if err != nil {
		return nil, err
	}
	t0, err := seconds(a[3])
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	for _, e := range l.Events[min(from, len(l.Events)):] {
		fmt.Fprintf(&b, "demo:   %+7.2f s  %-17s %s\n", e.Time.Sub(t0).Seconds(), e.Kind, cut(e.Message))
	}
	return nil, os.WriteFile(filepath.Join(filepath.Dir(a[0]), "events.new"), []byte(b.String()), 0o644)
}

// summary prints the demo's closing table from the files it saved in
// WORKDIR and the figures the script passes in its environment.
func summary(a []string) ([]string, error) {
	w, e := a[0], os.Getenv
	var (
		cl         cluster.State
		job        api.Job
		mig        api.Migration
		evl        api.EventList
		views      []map[string]check.PodSeen
		checkpoint = map[string]api.Checkpoint{}
	)
	if err := load(filepath.Join(w, "cluster.json"), &cl); err != nil {
		return nil, err
	}
	if err := load(filepath.Join(w, "start-status.json"), &job); err != nil {
		return nil, err
	}
	if err := load(filepath.Join(w, "migrate.json"), &mig); err != nil {
		return nil, err
	}
	if err := load(filepath.Join(w, "events.json"), &evl); err != nil {
		return nil, err
	}
	for _, s := range []string{"start", "moved", "recovered"} {
		v, err := loadPods(filepath.Join(w, s+"-pods.json"))
		if err != nil {
			return nil, err
		}
		views = append(views, v)
	}
	for _, s := range []string{"cks1", "cks2", "cks3"} {
		var cks api.CheckpointList
		if err := load(filepath.Join(w, s+".json"), &cks); err != nil {
			return nil, err
		}
		for _, c := range cks.Checkpoints {
			checkpoint[c.ID] = c
		}
	}
	t0, err := seconds(e("T_FAIL0"))
	if err != nil {
		return nil, fmt.Errorf("T_FAIL0: %w", err)
	}
	evs := evl.Events
	at := func(x api.Event) string { return fmt.Sprintf("t%+.1f s", x.Time.Sub(t0).Seconds()) }
	short := func(name string) string { _, s, _ := strings.Cut(name, "-"); return s }
	idx := func(k api.EventKind) int {
		return slices.IndexFunc(evs, func(x api.Event) bool { return x.Kind == k })
	}
	fail, rec := idx(api.EventFailure), idx(api.EventRecovered)
	if fail < 0 || rec < 0 {
		return []string{"no failure or recovered event in the job's event log"}, nil
	}
	back := evs[rec].Checkpoint

	var names []string
	for _, n := range cl.Nodes {
		names = append(names, n.Name)
	}
	fmt.Printf("cluster      %d nodes (%s), each a cruzd in its own network namespace; LAN %s, %s; up in %s s\n",
		len(cl.Nodes), strings.Join(names, ", "), e("LAN"), e("SUBNET"), e("T_UP"))
	argv := slices.Clone(job.Argv)
	if len(argv) > 0 {
		argv[0] = filepath.Base(argv[0])
	}
	fmt.Printf("job          %s (id %s) of %s: %d ranks, %d pods (1 mpiexec + %d ranks), %s\n",
		job.Name, job.ID, job.User, job.NP, len(job.Pods), len(job.Pods)-1, strings.Join(argv, " "))
	fmt.Printf("policy       %s; spare %s (cruz run --interval %s --spares %s)\n", job.Policy, strings.Join(job.Spares, ", "), e("INTERVAL"), e("SPARES"))
	fmt.Println("pods         IP and MAC the same throughout; node at the start -> after the migration -> after the recovery")
	for _, p := range job.Pods {
		n := p.Name
		fmt.Printf("  %-9s  %-12s %s   %s -> %s -> %s\n", short(n), p.IP, p.MAC, views[0][n].Node, views[1][n].Node, views[2][n].Node)
	}
	var taken []api.Event
	for _, x := range evs {
		if x.Kind == api.EventCheckpoint {
			taken = append(taken, x)
		}
	}
	fmt.Printf("checkpoints  %d (periodic, every %s or more as policy.max_overhead spaces them, and one asked for); the job's traffic held while all pods are dumped at once; t: when %s failed\n",
		len(taken), e("INTERVAL"), e("FAIL_NODE"))
	costs := regexp.MustCompile(`: (.*?); next`)
	for _, x := range taken {
		mark := ""
		if x.Checkpoint == back {
			mark = "  <- rolled back to"
		}
		c, ok := checkpoint[x.Checkpoint]
		if !ok { // pruned before the demo listed it: what the event says
			m := x.Message
			if g := costs.FindStringSubmatch(m); g != nil {
				m = g[1]
			}
			fmt.Printf("  %-10s %-9s %s%s\n", x.Checkpoint, at(x), m, mark)
			continue
		}
		var mpx, lo, hi int64 = 0, -1, 0
		for _, p := range c.Pods {
			switch {
			case strings.HasSuffix(p.Name, "-mpiexec"):
				mpx += p.Bytes
			default:
				if lo < 0 || p.Bytes < lo {
					lo = p.Bytes
				}
				hi = max(hi, p.Bytes)
			}
		}
		ranks := mib(lo) + " each"
		if mib(lo) != mib(hi) {
			ranks = mib(lo) + " to " + mib(hi)
		}
		ph := c.Phases
		fmt.Printf("  %-10s %-9s %s (mpiexec %s, ranks %s); held %4d ms (block %d + dump %d + resume %d), then commit %d ms%s\n",
			c.ID, at(x), mib(c.Bytes), mib(mpx), ranks, ph["held"], ph["block"], ph["dump"], ph["resume"], ph["commit"], mark)
	}
	for _, x := range evs {
		if x.Kind == api.EventCheckpointFailed || x.Kind == api.EventCheckpointSkipped || x.Kind == api.EventPruned {
			fmt.Printf("  %-10s %-9s %s\n", strings.TrimPrefix(string(x.Kind), "checkpoint_"), at(x), cut(x.Message))
		}
	}
	fmt.Printf("migration    %s %s -> %s, live: downtime %d ms (dump %d ms, restore %d ms, %s); cruz migrate %s s\n",
		short(mig.Pod), mig.From, mig.To, mig.DowntimeMS, mig.DumpMS, mig.RestoreMS, mib(mig.Bytes), e("T_MIG"))
	fmt.Printf("failure      t         cruz cluster fail %s (link cut, agent and pods killed), %s s; then the job's coordinator (its events):\n",
		e("FAIL_NODE"), e("T_FAIL"))
	for _, x := range evs[fail : rec+1] {
		if x.Kind == api.EventFailure || x.Kind == api.EventRestarting || x.Kind == api.EventRecovered {
			fmt.Printf("  %-10s %-9s %s\n", x.Kind, at(x), cut(x.Message))
		}
	}
	tNew, _ := strconv.ParseFloat(e("T_NEW"), 64)
	fmt.Printf("  %-10s t%+.1f s  the job's next new line of output\n", "new line", tNew)
	fmt.Printf("recovery     the job ran again %.1f s after %s failed: %.1f s to detect and declare the failure, %.1f s to roll the job back\n",
		evs[rec].Time.Sub(t0).Seconds(), e("FAIL_NODE"), evs[fail].Time.Sub(t0).Seconds(), evs[rec].Time.Sub(evs[fail].Time).Seconds())
	repeated := 0
	if i := idx(api.EventOutput); i >= 0 {
		if g := regexp.MustCompile(`repeated (\d+) lines`).FindStringSubmatch(evs[i].Message); g != nil {
			repeated, _ = strconv.Atoi(g[1])
		}
	}
	fmt.Printf("rollback     the failed run had printed %s iterations; restored from %s, the job printed %d of those lines again: not shown twice (output event)\n",
		e("N_AT_FAIL"), back, repeated)
	ref, refRun := "the program's formula's", ""
	if e("T_REF") != "" {
		ref, refRun = "an uninterrupted run's", " reference run "+e("T_REF")+" s;"
	}
	fmt.Printf("output       = %s, %s lines, none lost or doubled; MPICH abort banners left out: %s\n", ref, e("NREF"), e("BANNERS"))
	fmt.Printf("result       %s (the same)\n", e("RESULT"))
	fmt.Printf("timings      cluster up %s s;%s the run that lost %s %s s; demo so far %s s\n",
		e("T_UP"), refRun, e("FAIL_NODE"), e("T_RUN"), e("T_TOTAL"))
	return nil, nil
}
