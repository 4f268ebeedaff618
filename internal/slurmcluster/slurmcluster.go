//go:build linux

// Package slurmcluster runs a real Slurm cluster (Slurm 22.05 and munge, as
// Debian 12 packages them) on one machine, with one compute node per network
// namespace: one munged and the slurmctld in the root network namespace, and
// one slurmd per node inside that node's network namespace.
//
// The caller owns the network: it makes the node namespaces, gives each one
// an IPv4 address that the root namespace reaches, and puts an address of the
// root namespace (ControllerAddr) where the nodes reach it, usually on a
// bridge that holds the nodes' veths. A node namespace is named by the PID of
// any process that lives in it (for Cruz, the node's cruzd), because Cruz's
// node namespaces have no name under /run/netns.
//
// Everything the cluster writes lives in one state directory (Options.Dir),
// including a pid file per daemon, so that StopDir can remove a cluster that
// the process which started it no longer knows about (after a crash).
package slurmcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Defaults of Options. The ports are not Slurm's defaults (6817, 6818), so
// that the cluster does not clash with a site's own Slurm on the same host.
const (
	DefaultClusterName   = "cruz"
	DefaultSlurmctldPort = 16817
	DefaultSlurmdPort    = 16818
	DefaultStartTimeout  = 30 * time.Second
)

// Names in the state directory. Stop and StopDir remove exactly these, never
// anything else, so a wrong Dir cannot make them delete foreign files.
const (
	confName      = "slurm.conf"
	cgroupName    = "cgroup.conf"
	plugstackName = "plugstack.conf" // empty; used when Options.PlugstackConf is ""
	nodeInitName  = "node-init.sh"
	mungeDirName  = "munge" // 0700: key and PRNG seed
	runDirName    = "run"   // 0755: munge socket, the daemons' own pid files, cgroup save points
	spoolDirName  = "spool" // slurmctld state and one slurmd spool per node
	logDirName    = "log"
	pidDirName    = "pids" // our pid files (ROLE.pid) and node namespaces (slurmd-NODE.ns)
	mungeSocket   = "munge.socket.2"
)

// stateNames are every entry Start creates in Dir, in removal order.
var stateNames = []string{confName, cgroupName, plugstackName, nodeInitName, mungeDirName, runDirName, spoolDirName, pidDirName, logDirName}

// Bounds of waits. Variables so that tests could shorten them.
var (
	mungeTimeout = 10 * time.Second // for munged's socket to appear
	sinfoTimeout = 5 * time.Second  // per sinfo call while waiting for the nodes
	jobTimeout   = 5 * time.Second  // for jobs' processes to end on SIGTERM before the daemons stop
	termTimeout  = 10 * time.Second // from SIGTERM to SIGKILL
	killTimeout  = 5 * time.Second  // after SIGKILL
	pollInterval = 100 * time.Millisecond
)

// Node is one compute node.
type Node struct {
	// Name is the node's Slurm name and its hostname inside its slurmd's
	// UTS namespace.
	Name string
	// NetnsPID is any process living in the node's network namespace; its
	// slurmd is started in that namespace.
	NetnsPID int
	// Addr is the node's IPv4 address in its namespace, reachable from
	// ControllerAddr.
	Addr netip.Addr
}

// Options says what cluster Start makes.
type Options struct {
	// Dir is the state directory: slurm.conf, munge key and socket, spool,
	// logs and pid files. It must be absolute and missing or empty.
	Dir string
	// ClusterName is Slurm's ClusterName (default DefaultClusterName).
	ClusterName string
	// ControllerAddr is an IPv4 address of the root network namespace that
	// the nodes reach (e.g. on the bridge holding their veths).
	ControllerAddr netip.Addr
	// Nodes are the compute nodes, at least one.
	Nodes []Node
	// PlugstackConf is an optional plugstack.conf (SPANK plugins). Without
	// one the cluster uses an empty file in Dir, never the host's
	// /etc/slurm/plugstack.conf.
	PlugstackConf string
	// CPUsPerNode is every node's CPU count in slurm.conf (default: this
	// machine's CPUs). The nodes share the machine's real CPUs; Slurm is
	// told to believe the configuration (SlurmdParameters=config_overrides).
	CPUsPerNode int
	// MemoryPerNodeMB is every node's memory in slurm.conf (RealMemory,
	// default: this machine's). task/cgroup limits a step to the memory it
	// asked for (--mem), or to all of the node's without --mem.
	MemoryPerNodeMB int
	// SlurmctldPort and SlurmdPort default to DefaultSlurmctldPort and
	// DefaultSlurmdPort.
	SlurmctldPort int
	SlurmdPort    int
	// StartTimeout bounds the wait for every node to be idle (default
	// DefaultStartTimeout).
	StartTimeout time.Duration
	// KeepLogs makes Stop, and Start when it fails, leave Dir/log (and
	// Dir) in place. A later Start in the same Dir appends to those logs.
	KeepLogs bool
	// Log receives progress lines (default: discarded).
	Log io.Writer
}

// Cluster is a running cluster made by Start.
type Cluster struct {
	o     Options
	bins  map[string]string // program name -> path
	procs []*proc
}

// proc is a daemon Start started. Its waiter goroutine reaps it, so that a
// dead daemon is not left as a zombie that still looks alive in /proc.
type proc struct {
	role string // munged, slurmctld, slurmd-NODE
	pid  int
	logs []string // stdout and stderr file, then the daemon's log file
	done chan struct{}
	err  error // cmd.Wait's result, valid once done is closed
}

var (
	nameRE    = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,62}$`)
	clusterRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,39}$`)
)

func (o *Options) check() error {
	if o.Dir == "" || !filepath.IsAbs(o.Dir) || filepath.Clean(o.Dir) == "/" {
		return fmt.Errorf("state directory %q is not an absolute path below /", o.Dir)
	}
	o.Dir = filepath.Clean(o.Dir)
	if err := confSafe("state directory", o.Dir); err != nil {
		return err
	}
	// The munge socket is a unix socket: its path has at most 107 bytes.
	if s := filepath.Join(o.Dir, runDirName, mungeSocket); len(s) > 107 {
		return fmt.Errorf("state directory %q is too long for the munge socket %s (at most 107 bytes): pick a shorter one", o.Dir, s)
	}
	if o.ClusterName == "" {
		o.ClusterName = DefaultClusterName
	}
	if !clusterRE.MatchString(o.ClusterName) {
		return fmt.Errorf("cluster name %q is not 1 to 40 lowercase letters, digits, '-' or '_' starting with a letter", o.ClusterName)
	}
	if !o.ControllerAddr.Is4() {
		return fmt.Errorf("controller address %q is not an IPv4 address", o.ControllerAddr)
	}
	if len(o.Nodes) == 0 {
		return errors.New("no nodes: a cluster needs at least one")
	}
	names, addrs := map[string]bool{}, map[netip.Addr]bool{o.ControllerAddr: true}
	for _, n := range o.Nodes {
		if !nameRE.MatchString(n.Name) {
			return fmt.Errorf("node name %q is not 1 to 63 letters, digits, '-' or '_' starting with a letter (it becomes the node's hostname)", n.Name)
		}
		if names[n.Name] {
			return fmt.Errorf("node name %q is used twice", n.Name)
		}
		names[n.Name] = true
		if !n.Addr.Is4() {
			return fmt.Errorf("node %s: address %q is not an IPv4 address", n.Name, n.Addr)
		}
		if addrs[n.Addr] {
			return fmt.Errorf("node %s: address %s is already the controller's or another node's", n.Name, n.Addr)
		}
		addrs[n.Addr] = true
		if n.NetnsPID <= 0 {
			return fmt.Errorf("node %s: no NetnsPID (the PID of a process in the node's network namespace)", n.Name)
		}
	}
	if o.PlugstackConf != "" && !filepath.IsAbs(o.PlugstackConf) {
		return fmt.Errorf("plugstack.conf %q is not an absolute path (slurmd reads it from another working directory)", o.PlugstackConf)
	}
	if err := confSafe("plugstack.conf", o.PlugstackConf); err != nil {
		return err
	}
	if o.CPUsPerNode == 0 {
		o.CPUsPerNode = runtime.NumCPU()
	}
	if o.CPUsPerNode < 1 || o.CPUsPerNode > 4096 {
		return fmt.Errorf("CPUs per node %d is out of range 1..4096", o.CPUsPerNode)
	}
	if o.MemoryPerNodeMB == 0 {
		var si syscall.Sysinfo_t
		if err := syscall.Sysinfo(&si); err != nil {
			return fmt.Errorf("memory of this machine: %w", err)
		}
		o.MemoryPerNodeMB = int(uint64(si.Totalram) * uint64(si.Unit) >> 20)
	}
	if o.MemoryPerNodeMB < 1 {
		return fmt.Errorf("memory per node %d MB is not positive", o.MemoryPerNodeMB)
	}
	if o.SlurmctldPort == 0 {
		o.SlurmctldPort = DefaultSlurmctldPort
	}
	if o.SlurmdPort == 0 {
		o.SlurmdPort = DefaultSlurmdPort
	}
	for _, p := range []int{o.SlurmctldPort, o.SlurmdPort} {
		if p < 1 || p > 65535 {
			return fmt.Errorf("port %d is out of range 1..65535", p)
		}
	}
	if o.SlurmctldPort == o.SlurmdPort {
		return fmt.Errorf("slurmctld and slurmd ports are both %d", o.SlurmctldPort)
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = DefaultStartTimeout
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return nil
}

// confSafe checks that path can stand in slurm.conf, which cannot quote:
// AuthInfo=socket=... ends at a comma, '%' starts a substitution (%n), and
// whitespace or '#' end a value.
func confSafe(what, path string) error {
	if i := strings.IndexAny(path, ",%#\"' \t\n\\="); i >= 0 {
		return fmt.Errorf("%s %q has a %q, which slurm.conf cannot hold: pick a path of letters, digits and / . _ -", what, path, path[i])
	}
	return nil
}

// programs are the executables Start needs and the Debian packages that
// hold them.
var programs = []struct{ name, pkg string }{
	{"munged", "munge"}, {"mungekey", "munge"},
	{"slurmctld", "slurmctld"}, {"slurmd", "slurmd"},
	{"sinfo", "slurm-client"},
	{"nsenter", "util-linux"}, {"unshare", "util-linux"},
	{"mount", "mount"}, {"umount", "mount"},
}

// lookProgram finds a program on PATH, else in the system directories:
// the daemons live in /usr/sbin, which a user's or a service's PATH may lack.
func lookProgram(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

// CheckPrograms tells which programs a cluster needs are missing, naming
// the packages to install.
func CheckPrograms() error {
	_, err := findPrograms()
	return err
}

// findPrograms returns the path of every program a cluster needs, or an
// error naming those missing and the packages that hold them.
func findPrograms() (map[string]string, error) {
	paths := map[string]string{}
	var missing, pkgs []string
	seen := map[string]bool{}
	for _, p := range programs {
		path, err := lookProgram(p.name)
		if err == nil {
			paths[p.name] = path
			continue
		}
		missing = append(missing, fmt.Sprintf("%s (package %s)", p.name, p.pkg))
		if !seen[p.pkg] {
			seen[p.pkg] = true
			pkgs = append(pkgs, p.pkg)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing programs for a Slurm cluster: %s; install them with: apt-get install -y %s",
			strings.Join(missing, ", "), strings.Join(pkgs, " "))
	}
	return paths, nil
}

// Start makes and starts the cluster: munge key and munged, slurm.conf,
// slurmctld, one slurmd per node. It returns once sinfo shows every node
// idle. On any error it stops and removes everything it made.
func Start(ctx context.Context, o Options) (c *Cluster, err error) {
	if err := o.check(); err != nil {
		return nil, fmt.Errorf("slurm cluster options: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("starting a slurm cluster needs root (it enters network namespaces and runs slurmd and munged as root)")
	}
	bins, err := findPrograms()
	if err != nil {
		return nil, err
	}
	if ps := findDaemons(o.Dir); len(ps) > 0 {
		return nil, fmt.Errorf("processes of a slurm cluster in %s are still running (%s): stop them first (slurmcluster.StopDir)", o.Dir, describe(ps))
	}
	// Only the logs a Stop with KeepLogs left may be there: the daemons
	// append to them.
	ents, err := os.ReadDir(o.Dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read state directory: %w", err)
	}
	for _, e := range ents {
		if e.Name() != logDirName || !e.IsDir() {
			return nil, fmt.Errorf("state directory %s is not empty (it holds %s): remove what a previous cluster left there first (slurmcluster.StopDir), or pick an empty one", o.Dir, e.Name())
		}
	}
	if err := checkTraversable(o.Dir); err != nil {
		return nil, err
	}
	if err := checkNetwork(o); err != nil {
		return nil, err
	}

	c = &Cluster{o: o, bins: bins}
	defer func() {
		if err == nil {
			return
		}
		fmt.Fprintf(o.Log, "slurm cluster start failed; stopping and removing what it made\n")
		// The caller's ctx may be what failed; the rollback has its own bounds.
		if serr := stopDir(context.Background(), o.Dir, o.KeepLogs, o.Log); serr != nil {
			err = fmt.Errorf("%w; removing the partial cluster also failed: %v", err, serr)
		}
		c = nil
	}()
	if err := c.writeState(ctx); err != nil {
		return nil, err
	}
	if err := c.startMunged(ctx); err != nil {
		return nil, err
	}
	if _, err := c.start("slurmctld", nil, "slurmctld", "-D", "-f", c.path(confName)); err != nil {
		return nil, err
	}
	for _, n := range o.Nodes {
		if err := c.startSlurmd(n); err != nil {
			return nil, err
		}
	}
	if err := c.awaitIdle(ctx); err != nil {
		return nil, err
	}
	if err := c.recordNamespaces(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.o.Dir}, elem...)...)
}

// ConfPath is the cluster's slurm.conf.
func (c *Cluster) ConfPath() string { return c.path(confName) }

// ConfPathIn is the slurm.conf of a cluster whose state directory is dir,
// known before the cluster starts (agents that run before Slurm is up
// name it in their config).
func ConfPathIn(dir string) string { return filepath.Join(dir, confName) }

// Dir is the cluster's state directory.
func (c *Cluster) Dir() string { return c.o.Dir }

// Env is what a shell or a Slurm client (srun, sbatch, sinfo, ...) needs in
// its environment to use this cluster, in KEY=VALUE form. Everything else
// (controller address and port, munge socket) is in slurm.conf.
func (c *Cluster) Env() []string {
	return []string{"SLURM_CONF=" + c.ConfPath()}
}

// PIDs are the daemons' process IDs by role (munged, slurmctld,
// slurmd-NODE).
func (c *Cluster) PIDs() map[string]int {
	m := make(map[string]int, len(c.procs))
	for _, p := range c.procs {
		m[p.role] = p.pid
	}
	return m
}

// Stop ends every daemon of the cluster and every process left in its
// nodes' slurmd namespaces (job steps), SIGTERM first and SIGKILL after a
// bound, then removes the state directory (all but Dir/log with KeepLogs).
func (c *Cluster) Stop(ctx context.Context) error {
	return stopDir(ctx, c.o.Dir, c.o.KeepLogs, c.o.Log)
}

// checkTraversable checks that every existing directory above dir can be
// searched by anyone: munged refuses a socket that other users could not
// reach, and jobs, which run as their users, read dir's slurm.conf.
func checkTraversable(dir string) error {
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("state directory %s: %s is not searchable by other users (mode %04o), as munged and the jobs' users need: pick a directory elsewhere or chmod o+x %s",
				dir, d, fi.Mode().Perm(), d)
		}
		if d == "/" {
			return nil
		}
	}
}

// checkNetwork checks what Start can check of the caller's network before
// anything runs, so that the common mistakes get a clear error instead of a
// node that never registers.
func checkNetwork(o Options) error {
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return fmt.Errorf("list addresses of the root network namespace: %w", err)
	}
	found := false
	for _, a := range ifaddrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr() == o.ControllerAddr {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("controller address %s is not on any interface of this network namespace: put it on the bridge the nodes reach", o.ControllerAddr)
	}
	// slurmctld listens on every address of the root namespace.
	l, err := net.Listen("tcp", fmt.Sprintf(":%d", o.SlurmctldPort))
	if err != nil {
		return fmt.Errorf("slurmctld port %d is in use (another slurm cluster?): pick another SlurmctldPort: %w", o.SlurmctldPort, err)
	}
	l.Close()
	// The namespace this goroutine's thread is in, which is where the
	// daemons start: another thread of the process (even the main one)
	// may have entered another namespace.
	runtime.LockOSThread()
	self, err := os.Readlink("/proc/thread-self/ns/net")
	runtime.UnlockOSThread()
	if err != nil {
		return fmt.Errorf("read own network namespace: %w", err)
	}
	seen := map[string]string{}
	for _, n := range o.Nodes {
		id, err := nsID(n.NetnsPID, "net")
		if err != nil {
			return fmt.Errorf("node %s: network namespace of pid %d: %w", n.Name, n.NetnsPID, err)
		}
		if id == self {
			return fmt.Errorf("node %s: pid %d lives in the root network namespace, not in a node's", n.Name, n.NetnsPID)
		}
		if other, ok := seen[id]; ok {
			return fmt.Errorf("nodes %s and %s share one network namespace (pid %d): each node needs its own, as both slurmds listen on port %d", other, n.Name, n.NetnsPID, o.SlurmdPort)
		}
		seen[id] = n.Name
	}
	return nil
}

// writeState creates the state directory and everything in it the daemons
// read: munge key, slurm.conf, cgroup.conf, plugstack.conf, node-init.sh.
func (c *Cluster) writeState(ctx context.Context) error {
	o := c.o
	// 0755 all the way: jobs run as their users, who need slurm.conf and
	// the munge socket; only the key's folder is private.
	for _, d := range []string{"", runDirName, spoolDirName, logDirName, pidDirName} {
		if err := os.MkdirAll(c.path(d), 0o755); err != nil {
			return fmt.Errorf("create state directory: %w", err)
		}
		if err := os.Chmod(c.path(d), 0o755); err != nil {
			return fmt.Errorf("create state directory: %w", err)
		}
	}
	if err := os.Mkdir(c.path(mungeDirName), 0o700); err != nil {
		return fmt.Errorf("create munge key directory: %w", err)
	}
	if err := os.Mkdir(c.path(spoolDirName, "slurmctld"), 0o755); err != nil {
		return fmt.Errorf("create slurmctld state directory: %w", err)
	}
	for _, n := range o.Nodes {
		if err := os.Mkdir(c.path(spoolDirName, n.Name), 0o755); err != nil {
			return fmt.Errorf("create spool directory of %s: %w", n.Name, err)
		}
		if err := os.Mkdir(c.path(runDirName, n.Name+".cgroup"), 0o755); err != nil {
			return fmt.Errorf("create cgroup save point of %s: %w", n.Name, err)
		}
	}
	kctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(kctx, c.bins["mungekey"], "-c", "-k", c.path(mungeDirName, "munge.key")).CombinedOutput(); err != nil {
		return fmt.Errorf("create munge key: %w: %s", err, strings.TrimSpace(string(out)))
	}
	plug := o.PlugstackConf
	if plug == "" {
		plug = c.path(plugstackName)
		if err := os.WriteFile(plug, nil, 0o644); err != nil {
			return fmt.Errorf("write empty plugstack.conf: %w", err)
		}
	}
	host, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("read hostname: %w", err)
	}
	// slurmctld insists that SlurmctldHost is its own short hostname.
	host, _, _ = strings.Cut(host, ".")
	files := []struct {
		name string
		data string
		mode os.FileMode
	}{
		{confName, slurmConf(o, host, c.o.Dir, plug), 0o644},
		{cgroupName, cgroupConf, 0o644},
		{nodeInitName, nodeInit, 0o755},
	}
	for _, f := range files {
		if err := os.WriteFile(c.path(f.name), []byte(f.data), f.mode); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	return nil
}

// start starts one daemon with stdout and stderr appended to
// Dir/log/ROLE.out, its own session (so that it outlives the caller and
// no terminal signal reaches it) and SLURM_CONF set, and writes its pid
// file at once, so that StopDir finds it whatever happens next.
func (c *Cluster) start(role string, extra []*os.File, name string, args ...string) (*proc, error) {
	out := c.path(logDirName, role+".out")
	f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open output file of %s: %w", role, err)
	}
	defer f.Close()
	if p, ok := c.bins[name]; ok {
		name = p
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = f, f
	cmd.ExtraFiles = extra
	cmd.Env = append(os.Environ(), "SLURM_CONF="+c.ConfPath())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", role, err)
	}
	p := &proc{role: role, pid: cmd.Process.Pid, logs: []string{out}, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	c.procs = append(c.procs, p)
	if err := os.WriteFile(c.path(pidDirName, role+".pid"), []byte(strconv.Itoa(p.pid)+"\n"), 0o644); err != nil {
		return p, fmt.Errorf("write pid file of %s: %w", role, err)
	}
	fmt.Fprintf(c.o.Log, "started %s: pid %d\n", role, p.pid)
	switch {
	case role == "slurmctld":
		p.logs = append(p.logs, c.path(logDirName, "slurmctld.log"))
	case strings.HasPrefix(role, "slurmd-"):
		p.logs = append(p.logs, c.path(logDirName, role+".log"))
	case role == "munged":
		p.logs = append(p.logs, c.path(logDirName, "munged.log"))
	}
	return p, nil
}

// startMunged starts the one munged that every daemon and client of the
// cluster uses, and waits for its socket.
func (c *Cluster) startMunged(ctx context.Context) error {
	sock := c.path(runDirName, mungeSocket)
	p, err := c.start("munged", nil, "munged", "--foreground",
		"--socket="+sock,
		"--key-file="+c.path(mungeDirName, "munge.key"),
		"--seed-file="+c.path(mungeDirName, "munged.seed"),
		"--log-file="+c.path(logDirName, "munged.log"),
		"--pid-file="+c.path(runDirName, "munged.pid"))
	if err != nil {
		return err
	}
	deadline := time.Now().Add(mungeTimeout)
	for {
		if _, err := os.Stat(sock); err == nil {
			return nil
		}
		if err := c.wait(ctx, p, deadline); err != nil {
			return fmt.Errorf("munged did not create its socket %s: %w", sock, err)
		}
	}
}

// startSlurmd starts node n's slurmd in the node's network namespace and in
// new UTS and mount namespaces of its own: the UTS namespace carries the
// node's hostname, and the mount namespace a sysfs of the node's network
// namespace (see node-init.sh). The network namespace is passed as an open
// file, so that it cannot change under us if NetnsPID exits meanwhile.
func (c *Cluster) startSlurmd(n Node) error {
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", n.NetnsPID))
	if err != nil {
		return fmt.Errorf("open network namespace of node %s (pid %d): %w", n.Name, n.NetnsPID, err)
	}
	defer ns.Close()
	// ExtraFiles[0] is fd 3 in the child; node-init.sh closes it.
	_, err = c.start("slurmd-"+n.Name, []*os.File{ns},
		"nsenter", "--net=/proc/self/fd/3", "--",
		c.bins["unshare"], "--uts", "--mount", "--propagation", "private", "--",
		"/bin/sh", c.path(nodeInitName), n.Name, c.ConfPath(), c.path(runDirName, n.Name+".cgroup"), c.bins["slurmd"], nodeCgroup(c.o.Dir, n.Name))
	return err
}

// wait sleeps one poll interval, and fails if p died, ctx ended or the
// deadline passed.
func (c *Cluster) wait(ctx context.Context, p *proc, deadline time.Time) error {
	if time.Now().After(deadline) {
		return fmt.Errorf("timed out; %s", p.tail())
	}
	select {
	case <-p.done:
		return p.exitedError()
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(pollInterval):
		return nil
	}
}

func (p *proc) exitedError() error {
	return fmt.Errorf("%s exited at start (%v); %s", p.role, p.err, p.tail())
}

// tail quotes the end of the daemon's log file, or of its stdout and
// stderr while the log file is empty: with -D the daemons write their log
// to both, and only stderr holds what went wrong before the log was opened
// (or in node-init.sh, before slurmd ran).
func (p *proc) tail() string {
	l := p.logs[len(p.logs)-1]
	if fi, err := os.Stat(l); err != nil || fi.Size() == 0 {
		l = p.logs[0]
	}
	return fmt.Sprintf("the end of %s:\n%s", l, logTail(l, 15))
}

// awaitIdle polls sinfo until every node is idle. A daemon that dies
// meanwhile ends the wait at once with the end of its logs.
func (c *Cluster) awaitIdle(ctx context.Context) error {
	deadline := time.Now().Add(c.o.StartTimeout)
	var states map[string]string
	var lastErr error
	for {
		for _, p := range c.procs {
			select {
			case <-p.done:
				return p.exitedError()
			default:
			}
		}
		states, lastErr = c.nodeStates(ctx)
		if lastErr == nil {
			idle := 0
			for _, n := range c.o.Nodes {
				if states[n.Name] == "idle" {
					idle++
				}
			}
			if idle == len(c.o.Nodes) {
				fmt.Fprintf(c.o.Log, "slurm cluster %s is up: %d nodes idle\n", c.o.ClusterName, idle)
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval):
		}
		if time.Now().After(deadline) {
			break
		}
	}
	var b strings.Builder
	if lastErr != nil {
		fmt.Fprintf(&b, "sinfo failed: %v\n", lastErr)
	} else {
		var l []string
		for _, n := range c.o.Nodes {
			s := states[n.Name]
			if s == "" {
				s = "not listed"
			}
			l = append(l, n.Name+" "+s)
		}
		fmt.Fprintf(&b, "node states: %s (\"*\": slurmctld cannot reach the node's slurmd)\n", strings.Join(l, ", "))
	}
	for _, p := range c.procs {
		if p.role == "slurmctld" || (strings.HasPrefix(p.role, "slurmd-") && states[strings.TrimPrefix(p.role, "slurmd-")] != "idle") {
			b.WriteString(p.tail() + "\n")
		}
	}
	return fmt.Errorf("not every node was idle within %s (are the node addresses reachable from %s, and %s from the nodes?); %s",
		c.o.StartTimeout, c.o.ControllerAddr, c.o.ControllerAddr, strings.TrimRight(b.String(), "\n"))
}

// nodeStates runs sinfo once and returns each node's long state
// ("idle", "unknown*", ...).
func (c *Cluster) nodeStates(ctx context.Context) (map[string]string, error) {
	sctx, cancel := context.WithTimeout(ctx, sinfoTimeout)
	defer cancel()
	cmd := exec.CommandContext(sctx, c.bins["sinfo"], "--noheader", "--Node", "--format=%N %T")
	cmd.Env = append(os.Environ(), c.Env()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	states := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if name, state, ok := strings.Cut(strings.TrimSpace(line), " "); ok {
			states[name] = state
		}
	}
	return states, nil
}

// recordNamespaces writes each slurmd's mount and UTS namespaces to
// Dir/pids/slurmd-NODE.ns. Job steps live in them, and outlive a slurmd
// that dies: StopDir uses the files to find such orphans.
func (c *Cluster) recordNamespaces() error {
	for _, p := range c.procs {
		if !strings.HasPrefix(p.role, "slurmd-") {
			continue
		}
		key, err := nsKey(p.pid)
		if err != nil {
			return fmt.Errorf("read namespaces of %s (pid %d): %w", p.role, p.pid, err)
		}
		if err := os.WriteFile(c.path(pidDirName, p.role+".ns"), []byte(key+"\n"), 0o644); err != nil {
			return fmt.Errorf("write namespaces of %s: %w", p.role, err)
		}
	}
	return nil
}

func logTail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	if strings.TrimSpace(string(b)) == "" {
		return "(empty)"
	}
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return "  " + strings.Join(l, "\n  ")
}

// describe lists processes as "role pid, ...", sorted by pid.
func describe(ps []daemon) string {
	sort.Slice(ps, func(i, j int) bool { return ps[i].pid < ps[j].pid })
	l := make([]string, len(ps))
	for i, p := range ps {
		l[i] = fmt.Sprintf("%s %d", p.comm, p.pid)
	}
	return strings.Join(l, ", ")
}
