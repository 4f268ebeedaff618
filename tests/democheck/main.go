// Command democheck runs the demo's checks (package tests/check, shared with
// the end-to-end tests) on the files scripts/demo.sh saves: cruz's JSON
// answers and the job's output. The script drives the story and prints it;
// every verdict on a result comes from here. A check that fails prints its
// problems on stderr, one per line, and exits 1; bad usage exits 2.
//
// Usage: democheck COMMAND ARGS... (see the commands table below).
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/cluster"
	"github.com/cruz-hpc/cruz/tests/check"
)

type command struct {
	args string // usage of the arguments
	n    int    // least number of arguments
	run  func(args []string) ([]string, error)
}

var commands = map[string]command{
	"reference":      {"FILE NP ITERS", 3, reference},
	"cluster":        {"CLUSTER.json NODES", 2, clusterUp},
	"get":            {"FILE|- KEY[.KEY...]", 2, get},
	"pods":           {"JOB UID CLUSTER.json", 3, pods},
	"look":           {"STATUS.json PODS.json", 2, look},
	"where":          {"PODS.json", 1, where},
	"spread":         {"STATUS.json PODS.json NODES SPARES", 4, spread},
	"events":         {"EVENTS.json KIND [SHOW T0]", 2, events},
	"migrated":       {"PODS.json POD NODE", 3, migrated},
	"migration":      {"MIGRATE.json", 1, migration},
	"pods-on":        {"PODS.json NODE", 2, podsOn},
	"cluster-failed": {"CLUSTER.json NODE", 2, clusterFailed},
	"recovered":      {"BEFORE-PODS.json AFTER-PODS.json STATUS.json FAILED SPARE", 5, recovered},
	"program-output": {"RUN.out PROGRAM.out", 2, programOutput},
	"addresses":      {"WORKDIR", 1, addresses},
	"story":          {"EVENTS.json FAILED-NODE T0", 3, story},
	"resumed":        {"EVENTS.json", 1, resumed},
	"leftovers":      {"CLUSTER.json PODS.json...", 1, leftovers},
	"summary":        {"WORKDIR", 1, summary},
}

func main() {
	if len(os.Args) < 2 || commands[os.Args[1]].run == nil {
		usage()
	}
	c := commands[os.Args[1]]
	args := os.Args[2:]
	if len(args) < c.n {
		usage()
	}
	bad, err := c.run(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "democheck %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	for _, b := range bad {
		fmt.Fprintln(os.Stderr, "    "+b)
	}
	if len(bad) > 0 {
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: democheck COMMAND ARGS...; commands:")
	for name, c := range commands {
		fmt.Fprintf(os.Stderr, "  %s %s\n", name, c.args)
	}
	os.Exit(2)
}

// load decodes a JSON file ("-": stdin) into v.
func load(file string, v any) error {
	f := os.Stdin
	if file != "-" {
		var err error
		if f, err = os.Open(file); err != nil {
			return err
		}
		defer f.Close()
	}
	if err := json.NewDecoder(f).Decode(v); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return nil
}

func atoi(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	return n, nil
}

// seconds parses the script's clock (date +%s.%N).
func seconds(s string) (time.Time, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not a time in seconds", s)
	}
	return time.Unix(0, int64(f*1e9)), nil
}

func reference(a []string) ([]string, error) {
	np, err := atoi(a[1])
	if err != nil {
		return nil, err
	}
	iters, err := atoi(a[2])
	if err != nil {
		return nil, err
	}
	return nil, os.WriteFile(a[0], []byte(strings.Join(check.AllreduceOutput(np, iters), "\n")+"\n"), 0o644)
}

// clusterUp checks the nodes right after cluster up and prints node1's
// socket.
func clusterUp(a []string) ([]string, error) {
	var st cluster.State
	if err := load(a[0], &st); err != nil {
		return nil, err
	}
	n, err := atoi(a[1])
	if err != nil {
		return nil, err
	}
	var names, want, down []string
	for _, node := range st.Nodes {
		names = append(names, node.Name)
		if !node.Alive {
			down = append(down, node.Name)
		}
	}
	for i := 1; i <= n; i++ {
		want = append(want, fmt.Sprintf("node%d", i))
	}
	switch {
	case strings.Join(names, ",") != strings.Join(want, ","):
		return []string{fmt.Sprintf("the cluster's nodes are %v, expected %v", names, want)}, nil
	case len(down) > 0:
		return []string{"nodes not alive right after cluster up: " + strings.Join(down, ", ")}, nil
	}
	fmt.Println(st.Nodes[0].Socket)
	return nil, nil
}

// get prints one value of a JSON document: KEY.KEY... walks objects, a
// number walks arrays, and a last key "#" gives an array's length.
func get(a []string) ([]string, error) {
	var v any
	if err := load(a[0], &v); err != nil {
		return nil, err
	}
	for _, k := range strings.Split(a[1], ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[k]
		case []any:
			if k == "#" {
				v = len(x)
				continue
			}
			i, err := atoi(k)
			if err != nil || i < 0 || i >= len(x) {
				return nil, fmt.Errorf("%s: no element %s in an array of %d", a[1], k, len(x))
			}
			v = x[i]
		default:
			return nil, fmt.Errorf("%s: no key %q", a[1], k)
		}
	}
	if v == nil {
		return nil, fmt.Errorf("%s: no such key in %s", a[1], a[0])
	}
	fmt.Println(v)
	return nil, nil
}

func loadPods(file string) (map[string]check.PodSeen, error) {
	var p map[string]check.PodSeen
	err := load(file, &p)
	return p, err
}

func pods(a []string) ([]string, error) {
	uid, err := atoi(a[1])
	if err != nil {
		return nil, err
	}
	var st cluster.State
	if err := load(a[2], &st); err != nil {
		return nil, err
	}
	agents := map[int]string{}
	for _, n := range st.Nodes {
		agents[n.PID] = n.Name
	}
	seen, err := check.PodsSeen(a[0], uid, agents)
	if err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(seen, "", " ")
	if err != nil {
		return nil, err
	}
	fmt.Println(string(b))
	return nil, nil
}

func look(a []string) ([]string, error) {
	var job api.Job
	if err := load(a[0], &job); err != nil {
		return nil, err
	}
	seen, err := loadPods(a[1])
	if err != nil {
		return nil, err
	}
	return check.RecordsMatchPods(job, seen), nil
}

func where(a []string) ([]string, error) {
	seen, err := loadPods(a[0])
	if err != nil {
		return nil, err
	}
	fmt.Println(check.Where(seen))
	return nil, nil
}

func spread(a []string) ([]string, error) {
	var job api.Job
	if err := load(a[0], &job); err != nil {
		return nil, err
	}
	seen, err := loadPods(a[1])
	if err != nil {
		return nil, err
	}
	nodes, err := atoi(a[2])
	if err != nil {
		return nil, err
	}
	spares, err := atoi(a[3])
	if err != nil {
		return nil, err
	}
	return check.Spread(job, seen, nodes, spares), nil
}

func migrated(a []string) ([]string, error) {
	seen, err := loadPods(a[0])
	if err != nil {
		return nil, err
	}
	return check.Migrated(seen, a[1], a[2]), nil
}

func migration(a []string) ([]string, error) {
	var m api.Migration
	if err := load(a[0], &m); err != nil {
		return nil, err
	}
	fmt.Printf("%s moved from %s to %s: downtime %d ms (dump %d ms, restore %d ms, %s)\n",
		m.Pod, m.From, m.To, m.DowntimeMS, m.DumpMS, m.RestoreMS, mib(m.Bytes))
	return nil, nil
}

func podsOn(a []string) ([]string, error) {
	seen, err := loadPods(a[0])
	if err != nil {
		return nil, err
	}
	fmt.Println(strings.Join(check.PodsOn(seen, a[1]), " "))
	return nil, nil
}

func clusterFailed(a []string) ([]string, error) {
	var st cluster.State
	if err := load(a[0], &st); err != nil {
		return nil, err
	}
	return check.ClusterFailed(st, a[1]), nil
}

func recovered(a []string) ([]string, error) {
	before, err := loadPods(a[0])
	if err != nil {
		return nil, err
	}
	after, err := loadPods(a[1])
	if err != nil {
		return nil, err
	}
	var job api.Job
	if err := load(a[2], &job); err != nil {
		return nil, err
	}
	return check.Recovered(before, after, job, a[3], a[4]), nil
}

// programOutput writes the run's output without MPICH's abort banners and
// prints how many were left out.
func programOutput(a []string) ([]string, error) {
	b, err := os.ReadFile(a[0])
	if err != nil {
		return nil, err
	}
	out, banners := check.ProgramOutput(check.Lines(string(b)))
	if err := os.WriteFile(a[1], []byte(strings.Join(out, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	fmt.Println(banners)
	return nil, nil
}

// addresses checks that every pod kept its IP and MAC at every stage, in
// cruz's records and inside the pods.
func addresses(a []string) ([]string, error) {
	views := map[string]map[string][2]string{}
	var order []string
	for _, s := range []string{"start", "moved", "recovered"} {
		var job api.Job
		if err := load(filepath.Join(a[0], s+"-status.json"), &job); err != nil {
			return nil, err
		}
		seen, err := loadPods(filepath.Join(a[0], s+"-pods.json"))
		if err != nil {
			return nil, err
		}
		rec, pod := map[string][2]string{}, map[string][2]string{}
		for _, p := range job.Pods {
			rec[p.Name] = [2]string{p.IP, p.MAC}
		}
		for n, p := range seen {
			pod[n] = [2]string{p.IP, p.MAC}
		}
		views[s+" (cruz)"], views[s+" (pod)"] = rec, pod
		order = append(order, s+" (cruz)", s+" (pod)")
	}
	return check.AddressesKept(order, views), nil
}

func story(a []string) ([]string, error) {
	var l api.EventList
	if err := load(a[0], &l); err != nil {
		return nil, err
	}
	t0, err := seconds(a[2])
	if err != nil {
		return nil, err
	}
	return check.RecoveryStory(l.Events, a[1], t0), nil
}

func resumed(a []string) ([]string, error) {
	var l api.EventList
	if err := load(a[0], &l); err != nil {
		return nil, err
	}
	r, bad := check.Resumed(l.Events)
	if bad == nil {
		fmt.Printf("demo: Slurm started the job again; its step resumed from %s (%s), not from the start\n", r.Checkpoint, r.Message)
	}
	return bad, nil
}

// leftovers waits a little for the cluster's agents and namespace holders
// and for every pod seen to end, then names what still runs.
func leftovers(a []string) ([]string, error) {
	var st cluster.State
	if err := load(a[0], &st); err != nil {
		return nil, err
	}
	var procs []check.PodSeen
	names := map[int]string{}
	for _, n := range st.Nodes {
		for _, pid := range []int{n.PID, n.HolderPID} {
			if start, err := check.StartTime(pid); pid > 0 && err == nil {
				procs = append(procs, check.PodSeen{PID: pid, Start: start})
				names[pid] = "process of " + n.Name
			}
		}
	}
	for _, f := range a[1:] {
		seen, err := loadPods(f)
		if err != nil {
			return nil, err
		}
		for n, p := range seen {
			procs = append(procs, p)
			names[p.PID] = "pod " + n
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	var bad []string
	for _, p := range procs {
		for check.StillRunning(p) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if check.StillRunning(p) {
			bad = append(bad, fmt.Sprintf("%s (process %d) still runs", names[p.PID], p.PID))
		}
	}
	return bad, nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
