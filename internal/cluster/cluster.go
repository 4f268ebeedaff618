// Package cluster runs a local virtual Cruz cluster: several nodes on one
// machine, each of them a cruzd started in its own network and UTS
// namespaces, their pods on one LAN.
//
// A node is the cruzd process itself: `Up` starts the cruzd binary with
// CLONE_NEWNET|CLONE_NEWUTS, so the node's network namespace lives exactly as
// long as its agent (no `ip netns add`, no namespace bind mounts: pods copy
// the node's mounts, and namespace bind mounts there break CRIU restores).
// The LAN is a bridge in the root network namespace, without an address;
// every node has a veth pair whose root end is on that bridge and whose other
// end is the node's eth0, which the node's cruzd adds to its pod bridge
// (network.uplink). All pods share one subnet, each node handing out
// addresses from its own /24 of it (network.pool). The checkpoint store and
// the manifest key are shared by every node, as a cluster file system would
// be.
//
// With Options.Slurm, a real Slurm cluster runs over the nodes too
// (internal/slurmcluster): munged and slurmctld in the root network
// namespace, at the LAN's controller address (the one IPv4 address the LAN
// bridge then has, host 254 of the subnet's first /24), and one slurmd per
// node in the node's network namespace, at the node's own address.
package cluster

import (
	"github.com/cruz-hpc/cruz/internal/proc"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/config"
	"github.com/cruz-hpc/cruz/internal/nl"
	"github.com/cruz-hpc/cruz/internal/slurmcluster"
	"github.com/cruz-hpc/cruz/internal/store"
	"github.com/vishvananda/netlink"
)

// Defaults of Options.
const (
	DefaultDir    = "/run/cruz-cluster"
	DefaultLAN    = "czlan0"
	DefaultSubnet = "10.203.0.0/16"
	DefaultStore  = "/var/lib/cruz-cluster/store"
	DefaultNodes  = 3
	MaxNodes      = 200
	// StateFile is the name of the cluster's state file in its directory.
	StateFile = "cluster.json"
	// nodeUplink is the name of a node's LAN interface in its netns.
	nodeUplink = "eth0"
	// maxLANName leaves room for "-NNN" in the LAN veths' names (15 bytes).
	maxLANName = 11

	// The Slurm cluster's names in the cluster directory (Options.Slurm).
	// SlurmDirName is slurmcluster's state directory, which must be empty
	// when it starts: the files cluster writes for it live beside it.
	SlurmDirName   = "slurm"
	slurmPlugstack = "slurm-plugstack.conf"
	// slurmNodeDir is where every node's slurmd, and the jobs it runs, see
	// the node's own run directory (SlurmState.NodeDir).
	slurmNodeDir = "this-node"
	// SpankPlugin is the file name of Cruz's SPANK plugin.
	SpankPlugin = "cruz_spank.so"
	// slurmClusterName is Slurm's ClusterName (and its partition's name).
	slurmClusterName = "cruz"
	// controllerHost is the host number of the LAN's controller address in
	// the subnet's first /24, whose hosts 1..MaxNodes are the nodes'.
	controllerHost = 254
)

// Timeouts of Up and Down.
var (
	startTimeout = 30 * time.Second // for every node's agent to answer
	termTimeout  = 15 * time.Second // from SIGTERM to SIGKILL
	killTimeout  = 5 * time.Second  // after SIGKILL
)

// ErrNotUp means that there is no cluster state file in the directory.
var ErrNotUp = errors.New("no cluster is up")

// Options says what cluster Up makes.
type Options struct {
	Nodes  int    // number of nodes, 1..MaxNodes
	Dir    string // cluster directory: state file, key, nodes' run dirs
	LAN    string // name of the LAN bridge in the root netns
	Subnet string // IPv4 subnet of every pod, /8 to /16
	Store  string // checkpoint store shared by the nodes
	Cruzd  string // cruzd binary (default: CruzdPath())
	// Slurm also starts a Slurm cluster over the nodes (see SlurmState).
	Slurm bool
	// SpankPlugin is the Cruz SPANK plugin Slurm loads (default:
	// cruz_spank.so next to cruzd). Up refuses --slurm without it.
	SpankPlugin string
	Log         io.Writer
}

func (o *Options) defaults() {
	if o.Dir == "" {
		o.Dir = DefaultDir
	}
	if o.LAN == "" {
		o.LAN = DefaultLAN
	}
	if o.Subnet == "" {
		o.Subnet = DefaultSubnet
	}
	if o.Store == "" {
		o.Store = DefaultStore
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
}

// Node is one virtual node.
type Node struct {
	Name string `json:"name"`
	PID  int    `json:"pid"` // the node's cruzd
	// HolderPID is a process that holds the node's network and UTS
	// namespaces, so that they outlive an agent that dies, as a real
	// node's network outlives its cruzd.
	HolderPID int    `json:"holder_pid"`
	Socket    string `json:"socket"`
	Pool      string `json:"pool"`
	Log       string `json:"log"`
	RunDir    string `json:"run_dir"`
	Config    string `json:"config"`
	Veth      string `json:"veth"` // its LAN veth in the root netns
	// Addr is the node's own address on the pod LAN, where its agent
	// listens (port AgentPort) for the other agents.
	Addr  netip.Addr `json:"addr"`
	Alive bool       `json:"alive"`
	// Failed: cruz cluster fail killed the node as a dead machine dies
	// (FailNode); it stays down until the cluster is remade.
	Failed   bool      `json:"failed"`
	FailedAt time.Time `json:"failed_at,omitempty"`
}

// State is what cluster.json holds.
type State struct {
	Dir     string    `json:"dir"`
	LAN     string    `json:"lan"`
	Subnet  string    `json:"subnet"`
	Store   string    `json:"store"`
	KeyFile string    `json:"key_file"`
	Created time.Time `json:"created"`
	Nodes   []Node    `json:"nodes"`
	// Slurm is the Slurm cluster over the nodes; nil without one.
	Slurm *SlurmState `json:"slurm,omitempty"`
}

// SlurmState is the Slurm cluster that `cruz cluster up --slurm` starts
// over the nodes (internal/slurmcluster): munged and slurmctld in the root
// network namespace, one slurmd per node in the node's namespaces.
type SlurmState struct {
	// Dir is slurmcluster's state directory, DIR/slurm.
	Dir string `json:"dir"`
	// Conf is its slurm.conf: Slurm's clients need SLURM_CONF=Conf.
	Conf string `json:"conf"`
	// ControllerAddr is slurmctld's address: host 254 of the subnet's
	// first /24, on the LAN bridge with the subnet's prefix length. It is
	// the only IPv4 address the bridge has, and cruz does not make the root
	// network namespace forward.
	ControllerAddr netip.Addr `json:"controller_addr"`
	// Port is slurmctld's TCP port.
	Port int `json:"port"`
	// PID is slurmctld's.
	PID int `json:"pid"`
	// Plugstack is the plugstack.conf Slurm reads; it loads Plugin, if any.
	Plugstack string `json:"plugstack"`
	// Plugin is Cruz's SPANK plugin; "" if Slurm runs without it.
	Plugin string `json:"plugin,omitempty"`
	// NodeDir is a directory on which each node's slurmd, and every job
	// step it runs, sees the node's own run directory (a bind mount in the
	// slurmd's private mount namespace), so that the plugin's one
	// socket=NodeDir/cruzd.sock is each node's own agent. In the root
	// mount namespace it is empty.
	NodeDir string `json:"node_dir"`
	// Alive: slurmctld runs (set by Status).
	Alive bool `json:"alive"`
}

// Addr is where slurmctld listens.
func (s *SlurmState) Addr() netip.AddrPort {
	return netip.AddrPortFrom(s.ControllerAddr, uint16(s.Port))
}

// Node returns the node called name.
func (s *State) Node(name string) (Node, error) {
	names := make([]string, 0, len(s.Nodes))
	for _, n := range s.Nodes {
		if n.Name == name {
			return n, nil
		}
		names = append(names, n.Name)
	}
	return Node{}, fmt.Errorf("the cluster in %s has no node %q; its nodes are %s", s.Dir, name, strings.Join(names, ", "))
}

// CruzdPath is the cruzd binary a cluster runs: $CRUZ_BIN/cruzd if CRUZ_BIN
// is set, else the cruzd next to the running executable.
func CruzdPath() (string, error) {
	if d := os.Getenv("CRUZ_BIN"); d != "" {
		return filepath.Join(d, "cruzd"), nil
	}
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find own executable: %w", err)
	}
	return filepath.Join(filepath.Dir(self), "cruzd"), nil
}

// Load reads the state file of the cluster in dir. Without one it returns
// an error wrapping ErrNotUp.
func Load(dir string) (*State, error) {
	if dir == "" {
		dir = DefaultDir
	}
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s (start one with: cruz cluster up)", ErrNotUp, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("read cluster state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("cluster state %s is damaged (%v): remove the cluster with: cruz cluster down --dir %s", filepath.Join(dir, StateFile), err, dir)
	}
	return &s, nil
}

// Status loads the cluster in dir and tells which of its nodes' agents run.
func Status(dir string) (*State, error) {
	s, err := Load(dir)
	if err != nil {
		return nil, err
	}
	for i := range s.Nodes {
		s.Nodes[i].Alive = !s.Nodes[i].Failed && isNodeProcess(s.Nodes[i].PID, s.Nodes[i].Config)
	}
	if s.Slurm != nil {
		s.Slurm.Alive = isSlurmctld(s.Slurm.PID, s.Slurm.Conf)
	}
	return s, nil
}

func requireRoot(what string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("cruz cluster %s must run as root (it creates network namespaces and interfaces and runs cruzd): run it with sudo", what)
	}
	return nil
}

func isIfname(s string) bool {
	return s != "" && len(s) < 16 && !strings.ContainsAny(s, "/: \t\n\x00")
}

// vethName is the root end of node k's LAN veth.
func vethName(lan string, k int) string { return fmt.Sprintf("%s-%d", lan, k) }

// nodePool is node k's /24 of the subnet.
func nodePool(sub netip.Prefix, k int) netip.Prefix {
	b := sub.Masked().Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(k) << 8
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 24)
}

// AgentPort is the TCP port of every node agent's API on the pod LAN.
const AgentPort = 7170

// controllerAddr is the LAN's address in the root network namespace when
// Slurm runs (slurmctld's): host 254 of the subnet's first /24, which no
// node uses.
func controllerAddr(sub netip.Prefix) netip.Addr { return nodeAddr(sub, controllerHost) }

// nodeAddr is node k's own address on the pod LAN: host k of the subnet's
// first /24, which no node's pool uses.
func nodeAddr(sub netip.Prefix, k int) netip.Addr {
	a := sub.Masked().Addr()
	for i := 0; i < k; i++ {
		a = a.Next()
	}
	return a
}

// peers lists every node's agent as cluster.peers wants them.
func peers(sub netip.Prefix, n int) []string {
	out := make([]string, n)
	for k := 1; k <= n; k++ {
		out[k-1] = fmt.Sprintf("node%d=%s", k, netip.AddrPortFrom(nodeAddr(sub, k), AgentPort))
	}
	return out
}

func (o *Options) check() (netip.Prefix, error) {
	if o.Nodes < 1 || o.Nodes > MaxNodes {
		return netip.Prefix{}, fmt.Errorf("--nodes %d is out of range: a cluster has 1 to %d nodes", o.Nodes, MaxNodes)
	}
	if !filepath.IsAbs(o.Dir) {
		return netip.Prefix{}, fmt.Errorf("--dir %q is not an absolute path", o.Dir)
	}
	if !filepath.IsAbs(o.Store) {
		return netip.Prefix{}, fmt.Errorf("--store %q is not an absolute path", o.Store)
	}
	if !isIfname(o.LAN) || len(o.LAN) > maxLANName {
		return netip.Prefix{}, fmt.Errorf("--lan %q is not an interface name of 1 to %d bytes without '/', ':' or whitespace (the nodes' veths are named LAN-K)", o.LAN, maxLANName)
	}
	sub, err := netip.ParsePrefix(o.Subnet)
	if err != nil || !sub.Addr().Is4() || sub.Bits() < 8 || sub.Bits() > 16 || sub != sub.Masked() {
		return netip.Prefix{}, fmt.Errorf("--subnet %q is not an IPv4 CIDR with a prefix length from 8 to 16 and no host bits set (each node takes a /24 of it; example: %s)", o.Subnet, DefaultSubnet)
	}
	if len(filepath.Join(o.Dir, fmt.Sprintf("node%d", o.Nodes), "cruzd.sock")) > 107 {
		return netip.Prefix{}, fmt.Errorf("--dir %q is too long for the nodes' unix sockets (at most 107 bytes): pick a shorter directory", o.Dir)
	}
	if o.Slurm {
		// slurm.conf and plugstack.conf cannot quote the paths in DIR.
		if i := strings.IndexAny(o.Dir, ",%#\"' \t\n\\="); i >= 0 {
			return netip.Prefix{}, fmt.Errorf("--dir %q has a %q, which slurm.conf cannot hold (--slurm): pick a path of letters, digits and / . _ -", o.Dir, o.Dir[i])
		}
		if s := filepath.Join(o.Dir, SlurmDirName, "run", "munge.socket.2"); len(s) > 107 {
			return netip.Prefix{}, fmt.Errorf("--dir %q is too long for Slurm's munge socket %s (at most 107 bytes): pick a shorter directory", o.Dir, s)
		}
	}
	return sub, nil
}

// Up makes the cluster: the LAN bridge, and per node a run directory, a
// config, a cruzd in new network and UTS namespaces and its LAN veth. It
// waits until every node's agent answers and writes the state file. On any
// error it removes everything it made.
func Up(ctx context.Context, o Options) (st *State, err error) {
	o.defaults()
	if err := requireRoot("up"); err != nil {
		return nil, err
	}
	sub, err := o.check()
	if err != nil {
		return nil, err
	}
	if s, err := Load(o.Dir); err == nil {
		return nil, fmt.Errorf("a cluster of %d nodes is already up in %s (cruz cluster status lists them): remove it first with: cruz cluster down --dir %s", len(s.Nodes), o.Dir, o.Dir)
	} else if !errors.Is(err, ErrNotUp) {
		return nil, err
	}
	if pids := findNodeProcesses(o.Dir); len(pids) > 0 {
		return nil, fmt.Errorf("cruzd processes %v of a cluster in %s are still running without a state file: remove them with: cruz cluster down --dir %s --lan %s", pids, o.Dir, o.Dir, o.LAN)
	}
	if _, err := netlink.LinkByName(o.LAN); err == nil {
		return nil, fmt.Errorf("interface %s already exists: another cluster uses it, or one was left over (remove it with: cruz cluster down --dir DIR --lan %s), or pick another name with --lan", o.LAN, o.LAN)
	}
	cruzd := o.Cruzd
	if cruzd == "" {
		if cruzd, err = CruzdPath(); err != nil {
			return nil, err
		}
	}
	if fi, err := os.Stat(cruzd); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return nil, fmt.Errorf("cruzd binary %s not found or not executable: install cruzd next to cruz (make build), or set CRUZ_BIN to its directory", cruzd)
	}
	if o.Slurm {
		if o.SpankPlugin, err = spankPlugin(o.SpankPlugin, cruzd); err != nil {
			return nil, err
		}
		if err := checkSlurm(sub, o.LAN); err != nil {
			return nil, err
		}
		if ents, err := os.ReadDir(filepath.Join(o.Dir, SlurmDirName)); err == nil && len(ents) > 0 {
			return nil, fmt.Errorf("%s holds what a Slurm cluster left (%s, ...): remove it with: cruz cluster down --dir %s --lan %s", filepath.Join(o.Dir, SlurmDirName), ents[0].Name(), o.Dir, o.LAN)
		}
	}

	st = &State{Dir: o.Dir, LAN: o.LAN, Subnet: sub.String(), Store: o.Store,
		KeyFile: filepath.Join(o.Dir, "key", "cluster.key"), Created: time.Now().UTC()}
	defer func() {
		if err != nil {
			fmt.Fprintf(o.Log, "cluster up failed; removing what it made\n")
			if derr := Down(context.Background(), DownOptions{Dir: o.Dir, LAN: o.LAN, Log: o.Log}); derr != nil {
				err = fmt.Errorf("%w; removing the partial cluster also failed: %v", err, derr)
			}
		}
	}()
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create cluster directory: %w", err)
	}
	if err := os.Chmod(o.Dir, 0o755); err != nil {
		return nil, err
	}
	key, err := store.LoadKey(st.KeyFile)
	if err != nil {
		return nil, err
	}
	if _, err := store.Open(o.Store, key); err != nil {
		return nil, fmt.Errorf("checkpoint store (--store): %w", err)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: o.LAN, MTU: 1500}}
	if err := netlink.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("create LAN bridge %s: %w", o.LAN, err)
	}
	lan, err := netlink.LinkByName(o.LAN)
	if err != nil {
		return nil, fmt.Errorf("find LAN bridge %s: %w", o.LAN, err)
	}
	if err := netlink.LinkSetUp(lan); err != nil {
		return nil, fmt.Errorf("bring up LAN bridge %s: %w", o.LAN, err)
	}
	if o.Slurm {
		// The controller's address, on the bridge only: it reaches the
		// nodes, and nothing else (the root namespace does not forward).
		a := &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(controllerAddr(sub), sub.Bits()))}
		if err := netlink.AddrAdd(lan, a); err != nil {
			return nil, fmt.Errorf("add the Slurm controller's address %s to LAN bridge %s: %w", a.IPNet, o.LAN, err)
		}
	}

	exited := make([]chan struct{}, o.Nodes)
	for k := 1; k <= o.Nodes; k++ {
		n, done, err := startNode(o, st, sub, k, cruzd, lan)
		if err != nil {
			return nil, err
		}
		st.Nodes = append(st.Nodes, n)
		exited[k-1] = done
	}
	deadline := time.Now().Add(startTimeout)
	for i, n := range st.Nodes {
		if err := awaitNode(ctx, n, exited[i], deadline); err != nil {
			return nil, err
		}
		st.Nodes[i].Alive = true
		fmt.Fprintf(o.Log, "%s is up: pid %d, pool %s, socket %s\n", n.Name, n.PID, n.Pool, n.Socket)
	}
	if o.Slurm {
		if st.Slurm, err = startSlurm(ctx, o, st, sub, cruzd); err != nil {
			return nil, err
		}
	}
	if err := writeState(st); err != nil {
		return nil, err
	}
	return st, nil
}

// startNode writes node k's config and starts its cruzd in new network and
// UTS namespaces, then gives it its LAN interface.
func startNode(o Options, st *State, sub netip.Prefix, k int, cruzd string, lan netlink.Link) (Node, chan struct{}, error) {
	name := fmt.Sprintf("node%d", k)
	run := filepath.Join(o.Dir, name)
	n := Node{Name: name, RunDir: run, Socket: filepath.Join(run, "cruzd.sock"), Pool: nodePool(sub, k).String(), Addr: nodeAddr(sub, k),
		Log: filepath.Join(run, "cruzd.log"), Config: filepath.Join(run, "cruzd.toml"), Veth: vethName(o.LAN, k)}
	if err := os.MkdirAll(run, 0o755); err != nil {
		return n, nil, fmt.Errorf("create run directory of %s: %w", name, err)
	}
	cfg := config.Default()
	cfg.Agent.Socket, cfg.Agent.RunDir, cfg.Agent.KeyFile, cfg.Agent.Hostname = n.Socket, run, st.KeyFile, name
	cfg.Network.Subnet, cfg.Network.Pool, cfg.Network.Uplink = sub.String(), n.Pool, nodeUplink
	// Agents talk to each other on the pod LAN, each at its node's own
	// address, signed with the cluster key.
	cfg.Network.Address = netip.PrefixFrom(n.Addr, sub.Bits()).String()
	cfg.Agent.Listen = netip.AddrPortFrom(n.Addr, AgentPort).String()
	cfg.Cluster.Peers = peers(sub, o.Nodes)
	cfg.Store.Dir = o.Store
	if o.Slurm {
		// The agent asks slurmctld who owns a step and where it runs.
		cfg.Agent.SlurmConf = slurmcluster.ConfPathIn(filepath.Join(o.Dir, SlurmDirName))
		// The node's slurmd sees its own cgroup as every hierarchy's root
		// and makes its steps' cgroups under /slurm (or /slurm_NODE) there.
		nodeCg := slurmcluster.NodeCgroupPath(filepath.Join(o.Dir, SlurmDirName), name)
		cfg.Agent.SlurmCgroups = []string{nodeCg + "/slurm", nodeCg + "/slurm_%n"}
	}
	if err := cfg.Validate(); err != nil {
		return n, nil, fmt.Errorf("config of %s: %w", name, err)
	}
	f, err := os.OpenFile(n.Config, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return n, nil, fmt.Errorf("write config of %s: %w", name, err)
	}
	fmt.Fprintf(f, "# cruzd config of virtual node %s, written by cruz cluster up.\n", name)
	err = config.Write(f, cfg)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, nil, fmt.Errorf("write config of %s: %w", name, err)
	}
	// The holder makes the node's network and UTS namespaces and keeps
	// them; the agent joins them.
	holder := exec.Command(cruzd, config.HoldNodeArg, "--config", n.Config)
	holder.Dir = "/"
	hlog, err := os.OpenFile(n.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return n, nil, fmt.Errorf("open log of %s: %w", name, err)
	}
	defer hlog.Close()
	holder.Stdout, holder.Stderr = hlog, hlog
	holder.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWUTS, Setsid: true}
	if err := holder.Start(); err != nil {
		return n, nil, fmt.Errorf("start the namespace holder of %s: %w", name, err)
	}
	n.HolderPID = holder.Process.Pid
	held := make(chan struct{})
	go func() { _ = holder.Wait(); close(held) }()
	// The node's end is made directly in the node's netns, named eth0; the
	// agent waits for it (network.uplink).
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: n.Veth, MTU: 1500, MasterIndex: lan.Attrs().Index},
		PeerName:      nodeUplink,
		PeerNamespace: netlink.NsPid(n.HolderPID),
	}
	err = netlink.LinkAdd(veth)
	if err != nil {
		err = fmt.Errorf("create LAN veth %s of %s: %w", n.Veth, name, err)
	} else if l, lerr := netlink.LinkByName(n.Veth); lerr != nil {
		err = fmt.Errorf("find LAN veth %s: %w", n.Veth, lerr)
	} else if lerr := netlink.LinkSetUp(l); lerr != nil {
		err = fmt.Errorf("bring up LAN veth %s: %w", n.Veth, lerr)
	}
	if err != nil {
		select {
		case <-held: // the binary cannot even hold the namespaces
			return n, held, exitedError(n)
		case <-time.After(100 * time.Millisecond):
		}
		return n, nil, err
	}
	done, err := startAgent(&n, cruzd)
	return n, done, err
}

// startAgent starts the node's cruzd inside the holder's namespaces and
// returns a channel closed when it exits.
func startAgent(n *Node, cruzd string) (chan struct{}, error) {
	logf, err := os.OpenFile(n.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log of %s: %w", n.Name, err)
	}
	defer logf.Close()
	// nsenter joins the namespaces and execs cruzd in the same process.
	cmd := exec.Command("nsenter", fmt.Sprintf("--net=/proc/%d/ns/net", n.HolderPID), fmt.Sprintf("--uts=/proc/%d/ns/uts", n.HolderPID),
		"--", cruzd, "--config", n.Config)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start cruzd of %s (with nsenter, from util-linux): %w", n.Name, err)
	}
	n.PID = cmd.Process.Pid
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	return done, nil
}

// Restart restarts the agent of a node, as `systemctl restart cruzd` would
// on a real node: the running one gets SIGTERM (which ends the jobs it
// coordinates and the pods it holds), or SIGKILL with kill (a crash: its
// pods live on and the new agent takes back those of jobs coordinated
// elsewhere); then a new cruzd starts in the node's namespaces.
func Restart(ctx context.Context, dir, node string, kill bool) (*State, error) {
	if err := requireRoot("restart"); err != nil {
		return nil, err
	}
	unlock, err := lockState(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := Status(dir)
	if err != nil {
		return nil, err
	}
	n, err := st.Node(node)
	if err != nil {
		return nil, err
	}
	if n.Failed {
		return nil, failedError(st, n)
	}
	if n.HolderPID <= 0 || !Alive(n.HolderPID) {
		return nil, fmt.Errorf("the namespaces of %s are gone (its holder process %d ended): remove and remake the cluster (cruz cluster down, cruz cluster up)", node, n.HolderPID)
	}
	if n.Alive {
		sig := syscall.SIGTERM
		if kill {
			sig = syscall.SIGKILL
		}
		_ = syscall.Kill(n.PID, sig)
		if left := awaitGone(ctx, []int{n.PID}, termTimeout); len(left) > 0 {
			_ = syscall.Kill(n.PID, syscall.SIGKILL)
			if left := awaitGone(ctx, left, killTimeout); len(left) > 0 {
				return nil, fmt.Errorf("cruzd of %s (pid %d) did not end", node, n.PID)
			}
		}
	}
	cruzd := ""
	if args := cmdline(n.HolderPID); len(args) > 0 {
		cruzd = args[0]
	}
	done, err := startAgent(&n, cruzd)
	if err != nil {
		return nil, err
	}
	if err := awaitNode(ctx, n, done, time.Now().Add(startTimeout)); err != nil {
		return nil, err
	}
	n.Alive = true
	for i := range st.Nodes {
		if st.Nodes[i].Name == node {
			st.Nodes[i] = n
		}
	}
	return st, writeState(st)
}

func exitedError(n Node) error {
	return fmt.Errorf("cruzd of %s exited at start; the end of its log:\n%s", n.Name, logTail(n.Log, 15))
}

// awaitNode waits until the node's agent answers on its socket.
func awaitNode(ctx context.Context, n Node, exited chan struct{}, deadline time.Time) error {
	for {
		c, cancel := context.WithTimeout(ctx, time.Second)
		v, err := api.NewClient(n.Socket).Version(c)
		cancel()
		if err == nil {
			if v.Node != n.Name {
				return fmt.Errorf("%s's agent reports node name %q: is another cruzd serving %s?", n.Name, v.Node, n.Socket)
			}
			return nil
		}
		select {
		case <-exited:
			return exitedError(n)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cruzd of %s did not answer on %s within %s; the end of its log:\n%s", n.Name, n.Socket, startTimeout, logTail(n.Log, 15))
		}
	}
}

func logTail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

func writeState(st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(st.Dir, "."+StateFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write cluster state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(st.Dir, StateFile)); err != nil {
		return fmt.Errorf("write cluster state: %w", err)
	}
	return nil
}

// DownOptions says which cluster Down removes.
type DownOptions struct {
	Dir   string // default DefaultDir
	LAN   string // LAN bridge if the state file is gone; default DefaultLAN
	Purge bool   // also delete the checkpoint store and the key
	Log   io.Writer
}

// Down removes the cluster in dir: first the Slurm cluster over the nodes,
// if any (its jobs, daemons and state directory, found by DIR/slurm whether
// or not the state file says so); then it ends every node's cruzd (SIGTERM,
// which ends the pods of its jobs; SIGKILL after 15 s), removes the LAN's
// controller address, deletes the LAN veths and bridge, the nodes' run
// directories and the state file. The checkpoint store and the key that
// signs it stay unless Purge is set. It works on a cluster that is partly up
// or already down.
func Down(ctx context.Context, o DownOptions) error {
	if o.Dir == "" {
		o.Dir = DefaultDir
	}
	if o.LAN == "" {
		o.LAN = DefaultLAN
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if err := requireRoot("down"); err != nil {
		return err
	}
	storeDir := ""
	slurmDir := filepath.Join(o.Dir, SlurmDirName)
	var ctrl netip.Addr
	if st, err := Load(o.Dir); err == nil {
		o.LAN, storeDir = st.LAN, st.Store
		if st.Slurm != nil {
			ctrl = st.Slurm.ControllerAddr
			if st.Slurm.Dir != "" {
				slurmDir = st.Slurm.Dir
			}
		}
	} else if !errors.Is(err, ErrNotUp) {
		fmt.Fprintf(o.Log, "warning: %v\n", err)
	}
	var errs []error
	// Slurm first, while the nodes still run: its jobs' steps run on them,
	// and its slurmds live in their network namespaces. StopDir finds the
	// daemons by their command lines too, so a cluster whose state
	// directory or state file is gone is stopped all the same; without one
	// it does nothing. (Up makes clusters only in absolute directories.)
	if filepath.IsAbs(slurmDir) {
		if err := slurmcluster.StopDir(ctx, slurmDir); err != nil {
			errs = append(errs, fmt.Errorf("stop the Slurm cluster in %s: %w", slurmDir, err))
		}
	}
	// Every cruzd started with a config in this directory, whether or not
	// the state file lists it.
	pids := findNodeProcesses(o.Dir)
	// The pods' network namespaces, from the agents' records and the
	// descriptors they hold: whatever an agent fails to end (it was
	// killed, or ended too slowly) is killed after it.
	podNets := map[uint64]bool{}
	entries0, _ := os.ReadDir(o.Dir)
	for _, e := range entries0 {
		if e.IsDir() && strings.HasPrefix(e.Name(), "node") {
			for ino := range setNetns(filepath.Join(o.Dir, e.Name())) {
				podNets[ino] = true
			}
		}
	}
	for _, pid := range pids {
		for _, ino := range heldNetns(pid) {
			podNets[ino] = true
		}
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	if left := awaitGone(ctx, pids, termTimeout); len(left) > 0 {
		fmt.Fprintf(o.Log, "cruzd %v did not end within %s of SIGTERM; killing\n", left, termTimeout)
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if left := awaitGone(ctx, left, killTimeout); len(left) > 0 {
			errs = append(errs, fmt.Errorf("cruzd %v did not die after SIGKILL", left))
		}
	}
	if n := killPodsLeft(ctx, podNets); n > 0 {
		fmt.Fprintf(o.Log, "killed %d pod processes that outlived their agents\n", n)
	}
	if err := removeControllerAddr(o.LAN, ctrl); err != nil {
		errs = append(errs, err)
	}
	if err := deleteLAN(o.LAN); err != nil {
		errs = append(errs, err)
	}
	if err := os.Remove(filepath.Join(o.Dir, slurmPlugstack)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	// Only empty: a node's run directory is mounted on it in that node's
	// slurmd's mount namespace, never in this one.
	if err := os.Remove(filepath.Join(o.Dir, slurmNodeDir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove %s (a node's run directory is mounted on it in this mount namespace?): %w", filepath.Join(o.Dir, slurmNodeDir), err))
	}
	entries, _ := os.ReadDir(o.Dir)
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "node") {
			if err := os.RemoveAll(filepath.Join(o.Dir, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, f := range []string{StateFile, "." + StateFile + ".tmp"} {
		if err := os.Remove(filepath.Join(o.Dir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if o.Purge {
		if storeDir != "" {
			if err := os.RemoveAll(storeDir); err != nil {
				errs = append(errs, err)
			}
		}
		if err := os.RemoveAll(filepath.Join(o.Dir, "key")); err != nil {
			errs = append(errs, err)
		}
	}
	_ = os.Remove(o.Dir) // only if empty: the key stays with the store
	return errors.Join(errs...)
}

// deleteLAN deletes every veth on the LAN bridge and the bridge itself.
func deleteLAN(name string) error {
	br, err := netlink.LinkByName(name)
	if err != nil {
		return nil
	}
	if _, ok := br.(*netlink.Bridge); !ok {
		return fmt.Errorf("%s is a %s, not the cluster's LAN bridge: give the right one with --lan", name, br.Type())
	}
	links, err := nl.LinkList()
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	var errs []error
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			// A veth whose node's netns just died is gone already.
			if err := netlink.LinkDel(l); err != nil && !errors.Is(err, syscall.ENODEV) {
				errs = append(errs, fmt.Errorf("delete LAN veth %s: %w", l.Attrs().Name, err))
			}
		}
	}
	if err := netlink.LinkDel(br); err != nil {
		errs = append(errs, fmt.Errorf("delete LAN bridge %s: %w", name, err))
	}
	return errors.Join(errs...)
}

// findNodeProcesses lists the live processes run as `... --config
// DIR/nodeK/cruzd.toml`: the node agents of the cluster in dir.
func findNodeProcesses(dir string) []int {
	dir = filepath.Clean(dir)
	var pids []int
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		args := cmdline(pid)
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "--config" && filepath.Dir(filepath.Dir(args[i+1])) == dir &&
				strings.HasPrefix(filepath.Base(filepath.Dir(args[i+1])), "node") && Alive(pid) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// isNodeProcess tells whether pid is a live cruzd run with config.
func isNodeProcess(pid int, config string) bool {
	if pid <= 0 || !Alive(pid) {
		return false
	}
	args := cmdline(pid)
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--config" && args[i+1] == config {
			return true
		}
	}
	return false
}

func cmdline(pid int) []string { return proc.Cmdline(pid) }

// Alive tells whether pid is a live (not zombie) process.
func Alive(pid int) bool { return proc.Alive(pid) }

func awaitGone(ctx context.Context, pids []int, timeout time.Duration) []int {
	return proc.AwaitGone(ctx, pids, timeout)
}

// prefixNet is p as netlink wants it.
func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// checkSlurm checks, before anything is made, what a Slurm cluster over the
// nodes needs: its programs, a subnet that no address or route of the root
// network namespace touches (the LAN bridge gets an address in it, which
// must not capture anyone's traffic), and slurmctld's port.
func checkSlurm(sub netip.Prefix, lan string) error {
	if err := slurmcluster.CheckPrograms(); err != nil {
		return fmt.Errorf("--slurm: %w", err)
	}
	addrs, err := nl.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if p, ok := ipNetPrefix(a.IPNet); ok && p.Overlaps(sub) {
			name := "an interface"
			if l, err := netlink.LinkByIndex(a.LinkIndex); err == nil {
				name = l.Attrs().Name
			}
			return fmt.Errorf("--slurm puts the controller's address %s on %s, but %s already has address %s in subnet %s (another cluster with --slurm, or a real network): pick another --subnet",
				controllerAddr(sub), lan, name, a.IPNet, sub)
		}
	}
	routes, err := nl.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if p, ok := ipNetPrefix(r.Dst); ok && p.Bits() > 0 && p.Overlaps(sub) {
			return fmt.Errorf("--slurm puts the controller's address %s on %s, but this machine already routes %s, which overlaps subnet %s: pick another --subnet",
				controllerAddr(sub), lan, p, sub)
		}
	}
	return checkSlurmctldPort(slurmcluster.DefaultSlurmctldPort)
}

func ipNetPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP.To4())
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a, bits).Masked(), true
}

// checkSlurmctldPort fails if slurmctld's port is taken, naming the
// slurmctlds that run and the cruz clusters they belong to: only one Slurm
// cluster made by cruz can run on a machine at a time.
func checkSlurmctldPort(port int) error {
	l, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
	if err == nil {
		l.Close()
		return nil
	}
	var who []string
	for _, pid := range slurmctlds() {
		conf := ""
		args := cmdline(pid)
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-f" {
				conf = args[i+1]
			}
		}
		switch {
		case conf == "":
			who = append(who, fmt.Sprintf("slurmctld %d", pid))
		case filepath.Base(filepath.Dir(conf)) == SlurmDirName && fileExists(filepath.Join(filepath.Dir(filepath.Dir(conf)), StateFile)):
			who = append(who, fmt.Sprintf("slurmctld %d of the cruz cluster in %s (remove it with: cruz cluster down --dir %s)", pid, filepath.Dir(filepath.Dir(conf)), filepath.Dir(filepath.Dir(conf))))
		default:
			who = append(who, fmt.Sprintf("slurmctld %d with %s", pid, conf))
		}
	}
	running := ""
	if len(who) > 0 {
		running = "; running: " + strings.Join(who, ", ")
	}
	return fmt.Errorf("--slurm: TCP port %d, where the cluster's slurmctld would listen, is in use (%v): only one Slurm cluster made by cruz (cruz cluster up --slurm, or a test of internal/slurmcluster) can run on this machine at a time; stop the other first%s",
		port, err, running)
}

// slurmctlds lists the live slurmctld processes.
func slurmctlds() []int {
	var pids []int
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(b)) == "slurmctld" && Alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// isSlurmctld tells whether pid is a live slurmctld run with conf.
func isSlurmctld(pid int, conf string) bool {
	if pid <= 0 || conf == "" || !Alive(pid) {
		return false
	}
	for _, a := range cmdline(pid) {
		if a == conf {
			return true
		}
	}
	return false
}

// spankPlugin finds Cruz's SPANK plugin for a Slurm cluster (plugin, or
// cruz_spank.so next to cruzd): a Slurm cluster without it would run srun
// and sbatch without --cruz, which is not what --slurm is for.
func spankPlugin(plugin, cruzd string) (string, error) {
	if plugin == "" {
		plugin = filepath.Join(filepath.Dir(cruzd), SpankPlugin)
	}
	fi, err := os.Stat(plugin)
	if err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("--slurm: no Cruz SPANK plugin at %s, so srun and sbatch would have no --cruz: build it next to cruzd with `make build` (it needs Slurm's headers: apt-get install -y libslurm-dev)", plugin)
	}
	if strings.ContainsAny(plugin, " \t\n") {
		return "", fmt.Errorf("--slurm: the SPANK plugin's path %q has whitespace, which plugstack.conf cannot hold: move it", plugin)
	}
	return plugin, nil
}

// startSlurm starts the Slurm cluster over the nodes, whose agents answer:
// slurmctld at the LAN's controller address, node K's slurmd in the network
// namespace of its holder (which lives as long as the node) at the node's
// own address, and Cruz's SPANK plugin. Then it mounts each
// node's run directory on NodeDir in that node's slurmd's mount namespace,
// so that the plugin's socket (NodeDir/cruzd.sock) is every node's own
// agent. On error the caller's Down removes it all.
func startSlurm(ctx context.Context, o Options, st *State, sub netip.Prefix, cruzd string) (*SlurmState, error) {
	ss := &SlurmState{Dir: filepath.Join(o.Dir, SlurmDirName), ControllerAddr: controllerAddr(sub), Port: slurmcluster.DefaultSlurmctldPort,
		Plugstack: filepath.Join(o.Dir, slurmPlugstack), NodeDir: filepath.Join(o.Dir, slurmNodeDir)}
	if err := os.Mkdir(ss.NodeDir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("create %s: %w", ss.NodeDir, err)
	}
	plugin := o.SpankPlugin // checked by Up
	conf := "# plugstack.conf of the Slurm cluster over the virtual nodes, written by\n" +
		"# cruz cluster up --slurm. On each node, " + ss.NodeDir + " is that node's run\n" +
		"# directory (a mount in its slurmd's namespace), so the socket is its own agent's.\n"
	ss.Plugin = plugin
	// required: Slurm ignores a failure of an optional plugin, which
	// would let a --cruz task on a node without an agent run
	// unprotected. cruz= is the command the plugin runs tasks with.
	conf += fmt.Sprintf("required %s socket=%s cruz=%s\n", plugin, filepath.Join(ss.NodeDir, "cruzd.sock"),
		filepath.Join(filepath.Dir(cruzd), "cruz"))
	if err := os.WriteFile(ss.Plugstack, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", ss.Plugstack, err)
	}
	nodes := make([]slurmcluster.Node, len(st.Nodes))
	for i, n := range st.Nodes {
		nodes[i] = slurmcluster.Node{Name: n.Name, NetnsPID: n.HolderPID, Addr: n.Addr}
	}
	c, err := slurmcluster.Start(ctx, slurmcluster.Options{Dir: ss.Dir, ClusterName: slurmClusterName, ControllerAddr: ss.ControllerAddr,
		Nodes: nodes, PlugstackConf: ss.Plugstack, SlurmctldPort: ss.Port, Log: o.Log})
	if err != nil {
		return nil, fmt.Errorf("start Slurm over the nodes: %w", err)
	}
	ss.Conf, ss.Alive = c.ConfPath(), true
	pids := c.PIDs()
	ss.PID = pids["slurmctld"]
	for _, n := range st.Nodes {
		if err := mountNodeDir(ctx, pids["slurmd-"+n.Name], n, ss.NodeDir); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(o.Log, "slurm is up: slurmctld at %s, conf %s\n", ss.Addr(), ss.Conf)
	return ss, nil
}

// mountNodeDir bind-mounts node n's run directory on dir in the mount
// namespace of its slurmd (pid), which is the slurmd's own, private one
// (slurmcluster starts it with unshare --mount --propagation private), and
// checks that the node's agent socket is there.
func mountNodeDir(ctx context.Context, pid int, n Node, dir string) error {
	if pid <= 0 || !Alive(pid) {
		return fmt.Errorf("the slurmd of %s is not running (pid %d)", n.Name, pid)
	}
	mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(mctx, "nsenter", fmt.Sprintf("--mount=/proc/%d/ns/mnt", pid), "--", "mount", "--bind", n.RunDir, dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mount %s's run directory on %s for its slurmd (pid %d): %w: %s", n.Name, dir, pid, err, strings.TrimSpace(string(out)))
	}
	// /proc/PID/root resolves paths in the slurmd's mount namespace.
	sock := fmt.Sprintf("/proc/%d/root%s", pid, filepath.Join(dir, "cruzd.sock"))
	if fi, err := os.Stat(sock); err != nil || fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("%s's slurmd (pid %d) does not see its agent's socket at %s after the mount (%v)", n.Name, pid, filepath.Join(dir, "cruzd.sock"), err)
	}
	return nil
}

// removeControllerAddr removes the Slurm controller's address from the LAN
// bridge, or, if it is not known (the state file is gone), every IPv4
// address the bridge has: cruz cluster up gives it no other.
func removeControllerAddr(lan string, ctrl netip.Addr) error {
	br, err := netlink.LinkByName(lan)
	if err != nil {
		return nil
	}
	if _, ok := br.(*netlink.Bridge); !ok {
		return nil // deleteLAN says what is wrong
	}
	addrs, err := nl.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list the addresses of LAN bridge %s: %w", lan, err)
	}
	var errs []error
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IPNet.IP.To4())
		if !ok || (ctrl.IsValid() && ip != ctrl) {
			continue
		}
		if err := netlink.AddrDel(br, &a); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("remove address %s from LAN bridge %s: %w", a.IPNet, lan, err))
		}
	}
	return errors.Join(errs...)
}
