package launcher

import (
	"golang.org/x/sys/unix"

	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/cluster"
	"github.com/spf13/cobra"
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

func (c *cli) clusterCommand() *cobra.Command {
	cl := &cobra.Command{
		Use:   "cluster",
		Short: "a local virtual cluster to try Cruz on one machine",
		Long: `A local virtual cluster: several nodes on this machine, each a cruzd in its
own network namespace, their pods on one LAN bridge, one checkpoint store.
Optionally a real Slurm cluster over them (--slurm).`,
		Args: func(cmd *cobra.Command, a []string) error {
			if len(a) > 0 {
				return usagef(cmd, "unknown cluster command %q", a[0])
			}
			return usagef(cmd, "say what to do: up, status, env, restart, fail or down")
		},
		DisableFlagsInUseLine: true,
		RunE:                  func(*cobra.Command, []string) error { return nil },
		PersistentPreRun: func(*cobra.Command, []string) {
			// The node daemons must not inherit descriptors that whoever ran
			// cruz left open (a shell's redirections, a lock).
			_ = unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
		},
	}
	cl.AddCommand(c.clusterUpCommand(), c.clusterDownCommand(), c.clusterRestartCommand(),
		c.clusterFailCommand(), c.clusterStatusCommand(), c.clusterEnvCommand())
	return cl
}

func (c *cli) clusterUpCommand() *cobra.Command {
	o := cluster.Options{}
	cmd := command("up [--nodes N] [--subnet CIDR] [--store DIR] [--lan NAME] [--dir DIR] [--slurm]", "(root) start a local virtual cluster",
		`Start a local virtual cluster of N nodes, each a cruzd in its own network
namespace (root only); --slurm also starts a Slurm cluster over them.`, [2]int{0, 0},
		func(*cobra.Command, []string) error {
			o.Log = c.stdout
			st, err := cluster.Up(c.ctx, o)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "cluster of %d nodes up in %s (LAN %s, subnet %s, store %s)\n", len(st.Nodes), st.Dir, st.LAN, st.Subnet, st.Store)
			if st.Dir == cluster.DefaultDir {
				fmt.Fprintln(c.stdout, "cruz commands now use node1 unless given --node NODE")
			} else {
				fmt.Fprintf(c.stdout, "use it with: export CRUZ_CLUSTER_DIR=%s, then cruz --node NODE ...\n", st.Dir)
			}
			if st.Slurm != nil {
				fmt.Fprintf(c.stdout, "slurm: slurmctld at %s, %d nodes; use it with: export SLURM_CONF=%s (or: eval \"$(cruz cluster env --dir %s)\")\n",
					st.Slurm.Addr(), len(st.Nodes), shellQuote(st.Slurm.Conf), shellQuote(st.Dir))
			}
			return nil
		})
	f := cmd.Flags()
	f.IntVar(&o.Nodes, "nodes", cluster.DefaultNodes, fmt.Sprintf("number of nodes, 1 to %d", cluster.MaxNodes))
	f.StringVar(&o.Subnet, "subnet", cluster.DefaultSubnet, "IPv4 subnet of all pods (/8 to /16); node K hands out its K-th /24")
	f.StringVar(&o.Store, "store", cluster.DefaultStore, "checkpoint store shared by the nodes")
	f.StringVar(&o.LAN, "lan", cluster.DefaultLAN, "name of the LAN bridge in the root network namespace")
	f.StringVar(&o.Dir, "dir", clusterDir(), "cluster directory: state, key, nodes' run directories")
	f.BoolVar(&o.Slurm, "slurm", false, "also start a Slurm cluster over the nodes (slurmctld at host 254 of the subnet's first /24, on the LAN bridge)")
	return cmd
}

func (c *cli) clusterDownCommand() *cobra.Command {
	o := cluster.DownOptions{}
	cmd := command("down [--purge] [--lan NAME] [--dir DIR]", "(root) stop the virtual cluster and remove it",
		"Stop the virtual cluster (and its Slurm) and remove it; --purge also deletes its checkpoint store.", [2]int{0, 0},
		func(*cobra.Command, []string) error {
			o.Log = c.stderr
			return cluster.Down(c.ctx, o)
		})
	cmd.Flags().BoolVar(&o.Purge, "purge", false, "also delete the checkpoint store and its key")
	cmd.Flags().StringVar(&o.LAN, "lan", cluster.DefaultLAN, "LAN bridge to remove if the cluster's state file is gone")
	cmd.Flags().StringVar(&o.Dir, "dir", clusterDir(), "cluster directory")
	return cmd
}

func (c *cli) clusterRestartCommand() *cobra.Command {
	var kill bool
	var dir string
	cmd := command("restart [--kill] [--dir DIR] NODE", "(root) restart a node's agent",
		"Restart NODE's agent; --kill crashes it instead (the new agent takes back the pods it held).", [2]int{1, 1},
		func(_ *cobra.Command, a []string) error {
			st, err := cluster.Restart(c.ctx, dir, a[0], kill)
			if err != nil {
				return err
			}
			n, _ := st.Node(a[0])
			fmt.Fprintf(c.stdout, "%s's agent restarted: pid %d\n", n.Name, n.PID)
			return nil
		})
	cmd.Flags().BoolVar(&kill, "kill", false, "kill the agent with SIGKILL (a crash) instead of stopping it")
	cmd.Flags().StringVar(&dir, "dir", clusterDir(), "cluster directory")
	return cmd
}

// clusterFailCommand makes a node fail as a real one does (a fire drill).
func (c *cli) clusterFailCommand() *cobra.Command {
	var dir string
	cmd := command("fail [--dir DIR] NODE", "(root) make a node fail as a dead machine does",
		"Make NODE fail as a dead machine does: its link cut, its agent and pods killed (a drill).", [2]int{1, 1},
		func(_ *cobra.Command, a []string) error {
			_, rep, err := cluster.FailNode(c.ctx, dir, a[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(c.stdout, rep)
			return nil
		})
	cmd.Flags().StringVar(&dir, "dir", clusterDir(), "cluster directory")
	return cmd
}

func (c *cli) clusterStatusCommand() *cobra.Command {
	var asJSON bool
	var dir string
	cmd := command("status [--json] [--dir DIR]", "list the virtual cluster's nodes", "List the virtual cluster's nodes (and its Slurm).", [2]int{0, 0},
		func(*cobra.Command, []string) error {
			st, err := cluster.Status(dir)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(c.stdout, st)
			}
			fmt.Fprintf(c.stdout, "cluster in %s: LAN %s, subnet %s, store %s\n\n", st.Dir, st.LAN, st.Subnet, st.Store)
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
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
				fmt.Fprintf(c.stdout, "\nslurm: %s, conf %s, %s\n", state, s.Conf, plugin)
			}
			return nil
		})
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&dir, "dir", clusterDir(), "cluster directory")
	return cmd
}

func (c *cli) clusterEnvCommand() *cobra.Command {
	var node, dir string
	cmd := command("env [--node NODE] [--dir DIR]", "print the shell settings to use the virtual cluster",
		`Print export CRUZ_SOCKET=... for node1 (or --node NODE), and SLURM_CONF=... if
Slurm runs: eval "$(cruz cluster env)".`, [2]int{0, 0},
		func(*cobra.Command, []string) error {
			st, err := cluster.Load(dir)
			if err != nil {
				return err
			}
			if len(st.Nodes) == 0 {
				return fmt.Errorf("the cluster in %s has no nodes: remove it with cruz cluster down", dir)
			}
			n := st.Nodes[0]
			if node != "" {
				if n, err = st.Node(node); err != nil {
					return err
				}
			}
			fmt.Fprintf(c.stdout, "export CRUZ_SOCKET=%s\n", shellQuote(n.Socket))
			if st.Slurm != nil {
				fmt.Fprintf(c.stdout, "export SLURM_CONF=%s\n", shellQuote(st.Slurm.Conf))
			}
			return nil
		})
	// --node here names the node to print for, not the agent to talk to.
	cmd.Flags().StringVar(&node, "node", "", "node (default: the first)")
	cmd.Flags().StringVar(&dir, "dir", clusterDir(), "cluster directory")
	return cmd
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+=:,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
