package cluster

import (
	"github.com/cruz-hpc/cruz/internal/config"
	"github.com/cruz-hpc/cruz/internal/proc"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// failTimeout bounds how long Fail waits for the node's processes to die
// after SIGKILL.
var failTimeout = 10 * time.Second

// FailReport tells what Fail did to the node.
type FailReport struct {
	Node string
	// LinkCut: the root end of the node's LAN veth was brought down before
	// anything was killed (false if it was gone already).
	LinkCut bool
	// Agent: the node's cruzd ran and was killed.
	Agent bool
	// Holder: the holder of the node's namespaces ran and was killed.
	Holder bool
	// PodProcesses are the processes killed in the node's pods' network
	// namespaces.
	PodProcesses int
	// OtherProcesses are the other processes killed in the node's own
	// network namespace (a CRIU or helper the agent ran, say) or started by
	// its agent.
	OtherProcesses int
	// VethDeleted: the root end of the LAN veth outlived the node's network
	// namespace and Fail deleted it.
	VethDeleted bool
}

// String says what Fail did, for the CLI.
func (r FailReport) String() string {
	var did []string
	if r.LinkCut {
		did = append(did, "link cut")
	} else {
		did = append(did, "link already gone")
	}
	var killed []string
	if r.Agent {
		killed = append(killed, "agent")
	}
	if r.PodProcesses > 0 || !r.Agent {
		killed = append(killed, plural(r.PodProcesses, "pod process", "pod processes"))
	}
	if r.OtherProcesses > 0 {
		killed = append(killed, plural(r.OtherProcesses, "other process", "other processes"))
	}
	switch len(killed) {
	case 1:
		did = append(did, killed[0]+" killed")
	default:
		did = append(did, strings.Join(killed[:len(killed)-1], ", ")+" and "+killed[len(killed)-1]+" killed")
	}
	if r.Holder {
		did = append(did, "node removed")
	} else {
		did = append(did, "node's namespaces already gone")
	}
	return fmt.Sprintf("%s failed: %s", r.Node, strings.Join(did, ", "))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// Fail makes a node fail as a real one does, as a fire drill: see FailNode.
func Fail(ctx context.Context, dir, node string) (*State, error) {
	st, _, err := FailNode(ctx, dir, node)
	return st, err
}

// FailNode makes a node of the cluster in dir fail the way a real node does
// when it loses power: first its link goes down (the root end of its LAN
// veth, as a dead NIC: nothing more leaves the node while it dies), then
// its agent, every process of its pods, every other process in its network
// namespace (a CRIU the agent ran) and finally the holder of its namespaces
// get SIGKILL, so that its network namespace, pod bridge and veths go away.
// Nothing is told or cleaned up: the other nodes find out as they would
// about a dead machine. The node is marked failed in the state file; it
// cannot be restarted (cruz cluster down and up remake the cluster).
func FailNode(ctx context.Context, dir, node string) (*State, FailReport, error) {
	rep := FailReport{Node: node}
	if err := requireRoot("fail"); err != nil {
		return nil, rep, err
	}
	unlock, err := lockState(dir)
	if err != nil {
		return nil, rep, err
	}
	defer unlock()
	st, err := Status(dir)
	if err != nil {
		return nil, rep, err
	}
	n, err := st.Node(node)
	if err != nil {
		return nil, rep, err
	}
	if n.Failed {
		return nil, rep, fmt.Errorf("%s already failed (at %s, by cruz cluster fail); to get it back remake the cluster: cruz cluster down --dir %s, then cruz cluster up",
			node, n.FailedAt.Local().Format(time.DateTime), st.Dir)
	}
	rootNet, err := netnsIno("self")
	if err != nil {
		return nil, rep, fmt.Errorf("find own network namespace: %w", err)
	}

	// 1. The link: bring down the root end of the node's LAN veth.
	if n.Veth != "" {
		l, err := netlink.LinkByName(n.Veth)
		switch {
		case err == nil:
			if l.Type() != "veth" {
				return nil, rep, fmt.Errorf("%s's LAN interface %s is a %s, not a veth: the state file does not match the interfaces; remove the cluster with: cruz cluster down --dir %s", node, n.Veth, l.Type(), st.Dir)
			}
			if err := netlink.LinkSetDown(l); err != nil {
				return nil, rep, fmt.Errorf("cut %s's link (bring down %s): %w", node, n.Veth, err)
			}
			rep.LinkCut = true
		case !isLinkGone(err):
			return nil, rep, fmt.Errorf("find %s's LAN veth %s: %w", node, n.Veth, err)
		}
	}

	// 2. Who dies. The agent is stopped first, so that it starts no more
	// processes while its descendants and the namespaces it holds are
	// listed.
	var agents []int
	holder := 0
	for _, pid := range configProcesses(n.Config) {
		if isHolderProcess(pid, n.Config) {
			if pid == n.HolderPID || holder == 0 {
				holder = pid
			}
			continue
		}
		agents = append(agents, pid)
	}
	for _, pid := range agents {
		_ = syscall.Kill(pid, syscall.SIGSTOP)
	}
	rep.Agent = len(agents) > 0
	rep.Holder = holder != 0
	procs := readProcs()
	v := victims{root: rootNet, self: os.Getpid(), holder: holder, pods: map[uint64]bool{}, node: map[uint64]bool{}, tree: map[int]bool{}}
	for _, pid := range append(append([]int{}, agents...), holder) {
		if pid == 0 {
			continue
		}
		if p, ok := procs[pid]; ok && p.net != 0 && p.net != rootNet {
			v.node[p.net] = true
		}
		v.tree[pid] = true
	}
	for ino := range setNetns(n.RunDir) {
		v.pods[ino] = true
	}
	for _, pid := range agents {
		for _, ino := range heldNetns(pid) {
			v.pods[ino] = true
		}
	}
	for pid := range descendants(procs, v.tree) {
		v.tree[pid] = true
		if p := procs[pid]; p.net != 0 {
			v.pods[p.net] = true
		}
	}
	for ino := range v.node {
		delete(v.pods, ino)
	}
	delete(v.pods, rootNet)

	// 3. SIGKILL all of them, the holder last, then whatever is still (or
	// newly) in their network namespaces, until none is left. Only the
	// first round picks processes by pid (the agent's tree, the holder):
	// later ones go by namespace, so that a reused pid is never hit.
	killed := map[int]killedProc{}
	kill := func(procs map[int]procInfo, v victims, skip int) int {
		n := 0
		for pid, what := range v.pick(procs) {
			if pid == skip {
				continue
			}
			if _, ok := killed[pid]; !ok {
				if what == "" {
					what = "other"
					for _, a := range agents {
						if a == pid {
							what = "agent"
						}
					}
				}
				killed[pid] = killedProc{what: what, start: procs[pid].start}
			}
			_ = syscall.Kill(pid, syscall.SIGKILL)
			n++
		}
		return n
	}
	kill(procs, v, holder)
	if holder != 0 {
		_ = syscall.Kill(holder, syscall.SIGKILL)
		killed[holder] = killedProc{what: "holder", start: procs[holder].start}
	}
	byNetns := v
	byNetns.holder, byNetns.tree = 0, nil
	deadline := time.Now().Add(failTimeout)
	for {
		procs := readProcs()
		left := kill(procs, byNetns, 0)
		var alive []int
		for pid, k := range killed {
			if p, ok := procs[pid]; ok && p.start == k.start {
				alive = append(alive, pid)
			}
		}
		if left == 0 && len(alive) == 0 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			sort.Ints(alive)
			return nil, rep, fmt.Errorf("processes of %s still run %s after SIGKILL: %v (run cruz cluster fail %s again, or remove the cluster with cruz cluster down --dir %s)",
				node, failTimeout, alive, node, st.Dir)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, k := range killed {
		switch k.what {
		case "pod":
			rep.PodProcesses++
		case "other":
			rep.OtherProcesses++
		}
	}

	// 4. The root end of the LAN veth dies with the node's namespace, but
	// the kernel frees namespaces asynchronously: delete it if it is left.
	if n.Veth != "" {
		if l, err := netlink.LinkByName(n.Veth); err == nil && l.Type() == "veth" {
			if err := netlink.LinkDel(l); err != nil && !isLinkGone(err) {
				return nil, rep, fmt.Errorf("delete %s's LAN veth %s: %w", node, n.Veth, err)
			}
			rep.VethDeleted = true
		}
	}

	// 5. Record it.
	for i := range st.Nodes {
		if st.Nodes[i].Name == node {
			st.Nodes[i].Failed, st.Nodes[i].FailedAt, st.Nodes[i].Alive = true, time.Now().UTC(), false
		}
	}
	return st, rep, writeState(st)
}

// failedError is Restart's refusal of a failed node.
func failedError(st *State, n Node) error {
	return fmt.Errorf("%s failed (at %s, by cruz cluster fail): its namespaces, pods and link are gone as on a dead machine, so its agent cannot restart; to get it back remake the cluster: cruz cluster down --dir %s, then cruz cluster up",
		n.Name, n.FailedAt.Local().Format(time.DateTime), st.Dir)
}

func isLinkGone(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, syscall.ENODEV)
}

// lockState serialises the commands that rewrite the state file of the
// cluster in dir (fail, restart).
func lockState(dir string) (func(), error) {
	if dir == "" {
		dir = DefaultDir
	}
	f, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return func() {}, nil // Load says there is no cluster
	}
	if err != nil {
		return nil, fmt.Errorf("open cluster directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock cluster directory %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

// procInfo is what Fail needs of a process.
type procInfo struct {
	ppid  int
	start uint64 // start time, in clock ticks after boot: tells reused pids apart
	net   uint64 // inode of its network namespace; 0 if unreadable
}

// killedProc is a process that Fail killed.
type killedProc struct {
	what  string // "agent", "holder", "pod" or "other"
	start uint64
}

// readProcs reads every live process's parent and network namespace.
func readProcs() map[int]procInfo {
	out := map[int]procInfo{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		ppid, state, start, ok := parseStat(string(b))
		if !ok || state == 'Z' || state == 'X' {
			continue
		}
		ino, _ := netnsIno(strconv.Itoa(pid))
		out[pid] = procInfo{ppid: ppid, start: start, net: ino}
	}
	return out
}

// parseStat returns the parent, state and start time of a /proc/PID/stat
// line.
func parseStat(s string) (ppid int, state byte, start uint64, ok bool) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, 0, false
	}
	// After the command: state (field 3), ppid (4), ... starttime (22).
	f := strings.Fields(s[i+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, 0, false
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, 0, false
	}
	return ppid, f[0][0], start, true
}

func netnsIno(pid string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/"+pid+"/ns/net", &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// descendants returns every process below the roots.
func descendants(procs map[int]procInfo, roots map[int]bool) map[int]bool {
	children := map[int][]int{}
	for pid, p := range procs {
		children[p.ppid] = append(children[p.ppid], pid)
	}
	out := map[int]bool{}
	queue := make([]int, 0, len(roots))
	for pid := range roots {
		queue = append(queue, pid)
	}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range children[pid] {
			if !out[c] && !roots[c] {
				out[c] = true
				queue = append(queue, c)
			}
		}
	}
	return out
}

// victims says which processes belong to a failing node.
type victims struct {
	root   uint64          // the caller's network namespace: never a node's
	self   int             // the caller
	holder int             // the holder of the node's namespaces
	node   map[uint64]bool // the node's own network namespace
	pods   map[uint64]bool // its pods' network namespaces
	tree   map[int]bool    // its agent, its holder and what they started
}

// pick returns the node's live processes in procs, each with what it is:
// "holder", "pod" (in a pod's netns), "" (the agent, or another process in
// the node's netns or started by the agent).
func (v victims) pick(procs map[int]procInfo) map[int]string {
	out := map[int]string{}
	for pid, p := range procs {
		if pid == v.self || pid == 1 {
			continue
		}
		switch {
		case pid == v.holder:
			out[pid] = "holder"
		case p.net != 0 && p.net != v.root && v.pods[p.net]:
			out[pid] = "pod"
		case (p.net != 0 && p.net != v.root && v.node[p.net]) || v.tree[pid]:
			out[pid] = ""
		}
	}
	return out
}

// setNetns returns the network namespaces of the pods that the agent with
// run directory runDir recorded in sets/*/set.json.
func setNetns(runDir string) map[uint64]bool {
	out := map[uint64]bool{}
	files, _ := filepath.Glob(filepath.Join(runDir, "sets", "*", "set.json"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var rec struct {
			Netns map[string]uint64 `json:"netns"`
		}
		if json.Unmarshal(b, &rec) != nil {
			continue
		}
		for _, ino := range rec.Netns {
			if ino != 0 {
				out[ino] = true
			}
		}
	}
	return out
}

// heldNetns returns the network namespaces that pid holds descriptors of:
// an agent keeps each of its pods' that way.
func heldNetns(pid int) []uint64 {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, _ := os.ReadDir(dir)
	var out []uint64
	for _, fd := range fds {
		if ino, ok := parseNetnsLink(readlink(filepath.Join(dir, fd.Name()))); ok {
			out = append(out, ino)
		}
	}
	return out
}

func readlink(p string) string {
	s, _ := os.Readlink(p)
	return s
}

// parseNetnsLink parses the target of a descriptor of a network namespace,
// "net:[INODE]".
func parseNetnsLink(s string) (uint64, bool) {
	if !strings.HasPrefix(s, "net:[") || !strings.HasSuffix(s, "]") {
		return 0, false
	}
	ino, err := strconv.ParseUint(s[len("net:["):len(s)-1], 10, 64)
	return ino, err == nil
}

// configProcesses lists the live processes run with `--config config`: a
// node's holder and agent.
func configProcesses(config string) []int {
	var pids []int
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if isNodeProcess(pid, config) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// isHolderProcess tells whether pid is a live namespace holder of the node
// with config file cfgFile.
func isHolderProcess(pid int, cfgFile string) bool {
	if !isNodeProcess(pid, cfgFile) {
		return false
	}
	args := cmdline(pid)
	return len(args) > 1 && args[1] == config.HoldNodeArg
}

// killPodsLeft kills every process in the network namespaces nets (never
// this process's own) and returns how many it killed.
func killPodsLeft(ctx context.Context, nets map[uint64]bool) int {
	if len(nets) == 0 {
		return 0
	}
	self, _ := netnsIno("self")
	delete(nets, self)
	var killed []int
	for pid, p := range readProcs() {
		if nets[p.net] && pid != os.Getpid() && pid != 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			killed = append(killed, pid)
		}
	}
	proc.AwaitGone(ctx, killed, killTimeout)
	return len(killed)
}
