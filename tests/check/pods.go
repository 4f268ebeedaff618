package check

import (
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"

	"github.com/cruz-hpc/cruz/internal/api"
)

// PodSeen is one pod as the kernel shows it: the node whose agent is the
// parent of its PID 1, eth0's address and MAC read inside its namespaces,
// and its PID 1 with that process's start time (clock ticks since boot),
// which tells it from a later process that reuses the PID.
type PodSeen struct {
	Node  string `json:"node"`
	IP    string `json:"ip"`
	MAC   string `json:"mac"`
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// PodsSeen finds the pods of job as the kernel shows them: every process
// of uid that is PID 1 of its own pid namespace and a child of one of the
// agents (agents: agent PID -> node name), named by its hostname (the pod's
// name, which starts with the job's id). It needs root (nsenter).
func PodsSeen(job string, uid int, agents map[int]string) (map[string]PodSeen, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	pods := map[string]PodSeen{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := procStatus(pid)
		if err != nil || st.uid != uid || !st.nsInit {
			continue
		}
		node, ok := agents[st.ppid]
		if !ok {
			continue
		}
		out, err := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-u", "-n", "sh", "-c",
			"hostname; ip -br -4 addr show dev eth0; ip -br link show dev eth0").Output()
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if err != nil || len(lines) != 3 || !strings.HasPrefix(lines[0], job+"-") {
			continue // not (or no longer) a pod of this job
		}
		addr, link := strings.Fields(lines[1]), strings.Fields(lines[2])
		start, err := StartTime(pid)
		if err != nil || len(addr) < 3 || len(link) < 3 {
			continue
		}
		ip, _, _ := strings.Cut(addr[2], "/")
		pods[lines[0]] = PodSeen{Node: node, IP: ip, MAC: link[2], PID: pid, Start: start}
	}
	return pods, nil
}

type status struct {
	uid, ppid int
	nsInit    bool // PID 1 of its innermost pid namespace (and not of the host's)
}

func procStatus(pid int) (status, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return status{}, err
	}
	var s status
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ":")
		f := strings.Fields(v)
		switch {
		case k == "Uid" && len(f) > 0:
			s.uid, _ = strconv.Atoi(f[0])
		case k == "PPid" && len(f) > 0:
			s.ppid, _ = strconv.Atoi(f[0])
		case k == "NSpid":
			s.nsInit = len(f) > 1 && f[len(f)-1] == "1"
		}
	}
	return s, nil
}

// statFields are the fields of /proc/PID/stat after the command's name
// (the state first).
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return nil, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return f, nil
}

// StartTime is field 22 of /proc/PID/stat: when the process started.
func StartTime(pid int) (uint64, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// StillRunning tells whether the process seen as p still runs (and is not
// a zombie): the same PID with the same start time.
func StillRunning(p PodSeen) bool {
	f, err := statFields(p.PID)
	return err == nil && f[0] != "Z" && f[19] == strconv.FormatUint(p.Start, 10)
}

// RecordsMatchPods compares cruz's records of a running job with the pods
// the kernel shows: the same pods, each on the same node with the same IP
// and MAC.
func RecordsMatchPods(job api.Job, seen map[string]PodSeen) []string {
	if job.State != api.StateRunning {
		return []string{fmt.Sprintf("job %s is %s, not running", job.ID, job.State)}
	}
	rec := map[string]api.Pod{}
	for _, p := range job.Pods {
		rec[p.Name] = p
	}
	var bad []string
	for _, name := range unionKeys(rec, seen) {
		r, inRec := rec[name]
		s, inSeen := seen[name]
		switch {
		case !inSeen:
			bad = append(bad, fmt.Sprintf("%s: in cruz's records (on %s) but no such pod runs here", name, r.Node))
		case !inRec:
			bad = append(bad, fmt.Sprintf("%s: runs on %s but is not in cruz's records", name, s.Node))
		default:
			for _, f := range [][3]string{{"node", r.Node, s.Node}, {"ip", r.IP, s.IP}, {"mac", r.MAC, s.MAC}} {
				if f[1] != f[2] {
					bad = append(bad, fmt.Sprintf("%s: %s is %s in cruz's records, %s in the pod", name, f[0], f[1], f[2]))
				}
			}
		}
	}
	return bad
}

// AddressesKept checks that every view (a stage's name -> pod -> address)
// holds the pods of the first and gives each the IP and MAC it had there.
func AddressesKept(order []string, views map[string]map[string][2]string) []string {
	first := views[order[0]]
	var bad []string
	for _, v := range order {
		pods := views[v]
		if !sameKeys(pods, first) {
			bad = append(bad, fmt.Sprintf("%s: pods %v, at the start %v", v, sortedKeys(pods), sortedKeys(first)))
			continue
		}
		for _, name := range sortedKeys(pods) {
			if pods[name] != first[name] {
				bad = append(bad, fmt.Sprintf("%s: %s has IP and MAC %v, at the start %v", v, name, pods[name], first[name]))
			}
		}
	}
	return bad
}

// Where is "node: pod pod; node: pod" of the pods seen, mpiexec's first.
func Where(seen map[string]PodSeen) string {
	by := map[string][]string{}
	for name, p := range seen {
		_, short, _ := strings.Cut(name, "-")
		by[p.Node] = append(by[p.Node], short)
	}
	var parts []string
	for _, n := range sortedKeys(by) {
		ps := by[n]
		sort.Slice(ps, func(i, j int) bool {
			if (ps[i] == "mpiexec") != (ps[j] == "mpiexec") {
				return ps[i] == "mpiexec"
			}
			return ps[i] < ps[j]
		})
		parts = append(parts, n+": "+strings.Join(ps, " "))
	}
	return strings.Join(parts, "; ")
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func unionKeys[A, B any](a map[string]A, b map[string]B) []string {
	u := map[string]bool{}
	for k := range a {
		u[k] = true
	}
	for k := range b {
		u[k] = true
	}
	return sortedKeys(u)
}

func sameKeys[A, B any](a map[string]A, b map[string]B) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}
