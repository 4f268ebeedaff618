package launcher

import (
	"golang.org/x/sys/unix"

	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/cluster"
)

// clusterDir is the virtual cluster's directory: $CRUZ_CLUSTER_DIR or the
// default.
func clusterDir() string { return envOr("CRUZ_CLUSTER_DIR", cluster.DefaultDir) }

// agentSocket picks the agent's socket: --socket, else the socket of --node
// in the virtual cluster, else $CRUZ_SOCKET, else the default socket, or
// node1's if nothing answers on the default one and a virtual cluster is up.
// That last choice is never silent: note says which agent it is, and how to
// choose another.
func agentSocket(socket, node string) (sock, note string, err error) {
	if socket != "" && node != "" {
		return "", "", errors.New("give --socket or --node, not both")
	}
	if socket != "" {
		return socket, "", nil
	}
	if node != "" {
		st, err := cluster.Load(clusterDir())
		if err != nil {
			return "", "", fmt.Errorf("--node %s: %w", node, err)
		}
		n, err := st.Node(node)
		if err != nil {
			return "", "", err
		}
		return n.Socket, "", nil
	}
	if s := os.Getenv("CRUZ_SOCKET"); s != "" {
		return s, "", nil
	}
	if !answers(api.DefaultSocket) {
		if st, err := cluster.Load(clusterDir()); err == nil && len(st.Nodes) > 0 {
			n := st.Nodes[0]
			return n.Socket, fmt.Sprintf("cruz: no agent answers on %s; talking to %s of the virtual cluster (%s): set CRUZ_SOCKET, --socket or --node to choose the agent", api.DefaultSocket, n.Name, n.Socket), nil
		}
	}
	return api.DefaultSocket, "", nil
}

// answers tells whether something accepts connections on the unix socket.
func answers(socket string) bool {
	c, err := net.DialTimeout("unix", socket, 500*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

const clusterUsage = "usage: cruz cluster up|status|env|restart|fail|down [FLAGS] (cruz help lists the flags)"

func cmdCluster(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	// The node daemons must not inherit descriptors that whoever ran cruz
	// left open (a shell's redirections, a lock): mark them close-on-exec.
	_ = unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if len(args) == 0 {
		return usageError(stderr, errors.New(clusterUsage))
	}
	switch args[0] {
	case "up":
		return cmdClusterUp(ctx, args[1:], stdout, stderr)
	case "down":
		return cmdClusterDown(ctx, args[1:], stdout, stderr)
	case "restart":
		return cmdClusterRestart(ctx, args[1:], stdout, stderr)
	case "fail":
		return cmdClusterFail(ctx, args[1:], stdout, stderr)
	case "status":
		return cmdClusterStatus(args[1:], stdout, stderr)
	case "env":
		return cmdClusterEnv(args[1:], stdout, stderr)
	}
	return usageError(stderr, fmt.Errorf("unknown cluster command %q; %s", args[0], clusterUsage))
}

func cmdClusterUp(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("cluster up", stderr)
	o := cluster.Options{}
	fs.IntVar(&o.Nodes, "nodes", cluster.DefaultNodes, fmt.Sprintf("number of nodes, 1 to %d", cluster.MaxNodes))
	fs.StringVar(&o.Subnet, "subnet", cluster.DefaultSubnet, "IPv4 subnet of all pods (/8 to /16); node K hands out its K-th /24")
	fs.StringVar(&o.Store, "store", cluster.DefaultStore, "checkpoint store shared by the nodes")
	fs.StringVar(&o.LAN, "lan", cluster.DefaultLAN, "name of the LAN bridge in the root network namespace")
	fs.StringVar(&o.Dir, "dir", clusterDir(), "cluster directory: state, key, nodes' run directories")
	fs.BoolVar(&o.Slurm, "slurm", false, "also start a Slurm cluster over the nodes (slurmctld at host 254 of the subnet's first /24, on the LAN bridge)")
	if _, err := parse(fs, args, 0, 0, "[--nodes N] [--subnet CIDR] [--store DIR] [--lan NAME] [--dir DIR] [--slurm]"); err != nil {
		return usageError(stderr, err)
	}
	o.Log = stdout
	st, err := cluster.Up(ctx, o)
	if err != nil {
		return fail(stderr, err)
	}
	fmt.Fprintf(stdout, "cluster of %d nodes up in %s (LAN %s, subnet %s, store %s)\n", len(st.Nodes), st.Dir, st.LAN, st.Subnet, st.Store)
	if st.Dir == cluster.DefaultDir {
		fmt.Fprintln(stdout, "cruz commands now use node1 unless given --node NODE")
	} else {
		fmt.Fprintf(stdout, "use it with: export CRUZ_CLUSTER_DIR=%s, then cruz --node NODE ...\n", st.Dir)
	}
	if st.Slurm != nil {
		fmt.Fprintf(stdout, "slurm: slurmctld at %s, %d nodes; use it with: export SLURM_CONF=%s (or: eval \"$(cruz cluster env --dir %s)\")\n",
			st.Slurm.Addr(), len(st.Nodes), shellQuote(st.Slurm.Conf), shellQuote(st.Dir))
	}
	return 0
}

func cmdClusterDown(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("cluster down", stderr)
	o := cluster.DownOptions{}
	fs.BoolVar(&o.Purge, "purge", false, "also delete the checkpoint store and its key")
	fs.StringVar(&o.LAN, "lan", cluster.DefaultLAN, "LAN bridge to remove if the cluster's state file is gone")
	fs.StringVar(&o.Dir, "dir", clusterDir(), "cluster directory")
	if _, err := parse(fs, args, 0, 0, "[--purge] [--lan NAME] [--dir DIR]"); err != nil {
		return usageError(stderr, err)
	}
	o.Log = stderr
	if err := cluster.Down(ctx, o); err != nil {
		return fail(stderr, err)
	}
	return 0
}

func cmdClusterRestart(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("cluster restart", stderr)
	kill := fs.Bool("kill", false, "kill the agent with SIGKILL (a crash) instead of stopping it")
	dir := fs.String("dir", clusterDir(), "cluster directory")
	pos, err := parse(fs, args, 1, 1, "[--kill] [--dir DIR] NODE")
	if err != nil {
		return usageError(stderr, err)
	}
	st, err := cluster.Restart(ctx, *dir, pos[0], *kill)
	if err != nil {
		return fail(stderr, err)
	}
	n, _ := st.Node(pos[0])
	fmt.Fprintf(stdout, "%s's agent restarted: pid %d\n", n.Name, n.PID)
	return 0
}

// cmdClusterFail makes a node fail as a real one does (a fire drill).
func cmdClusterFail(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("cluster fail", stderr)
	dir := fs.String("dir", clusterDir(), "cluster directory")
	pos, err := parse(fs, args, 1, 1, "[--dir DIR] NODE")
	if err != nil {
		return usageError(stderr, err)
	}
	_, rep, err := cluster.FailNode(ctx, *dir, pos[0])
	if err != nil {
		return fail(stderr, err)
	}
	fmt.Fprintln(stdout, rep)
	return 0
}

func cmdClusterStatus(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("cluster status", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	dir := fs.String("dir", clusterDir(), "cluster directory")
	if _, err := parse(fs, args, 0, 0, "[--json] [--dir DIR]"); err != nil {
		return usageError(stderr, err)
	}
	st, err := cluster.Status(*dir)
	if err != nil {
		return fail(stderr, err)
	}
	if *asJSON {
		return printJSON(stdout, stderr, st)
	}
	fmt.Fprintf(stdout, "cluster in %s: LAN %s, subnet %s, store %s\n\n", st.Dir, st.LAN, st.Subnet, st.Store)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tPID\tPOOL\tSOCKET")
	for _, n := range st.Nodes {
		state := "up"
		switch {
		case n.Failed:
			state = "failed"
		case !n.Alive:
			state = "down"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", n.Name, state, n.PID, n.Pool, n.Socket)
	}
	tw.Flush()
	if s := st.Slurm; s != nil {
		state := "slurmctld at " + s.Addr().String()
		if !s.Alive {
			state = fmt.Sprintf("slurmctld (pid %d, at %s) is not running", s.PID, s.Addr())
		}
		plugin := "SPANK plugin " + s.Plugin
		if s.Plugin == "" {
			plugin = "no SPANK plugin"
		}
		fmt.Fprintf(stdout, "\nslurm: %s, conf %s, %s\n", state, s.Conf, plugin)
	}
	return 0
}

func cmdClusterEnv(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("cluster env", stderr)
	node := fs.String("node", "", "node (default: the first)")
	dir := fs.String("dir", clusterDir(), "cluster directory")
	if _, err := parse(fs, args, 0, 0, "[--node NODE] [--dir DIR]"); err != nil {
		return usageError(stderr, err)
	}
	st, err := cluster.Load(*dir)
	if err != nil {
		return fail(stderr, err)
	}
	if len(st.Nodes) == 0 {
		return fail(stderr, fmt.Errorf("the cluster in %s has no nodes: remove it with cruz cluster down", *dir))
	}
	n := st.Nodes[0]
	if *node != "" {
		if n, err = st.Node(*node); err != nil {
			return fail(stderr, err)
		}
	}
	fmt.Fprintf(stdout, "export CRUZ_SOCKET=%s\n", shellQuote(n.Socket))
	if st.Slurm != nil {
		fmt.Fprintf(stdout, "export SLURM_CONF=%s\n", shellQuote(st.Slurm.Conf))
	}
	return 0
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+=:,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
