// Package launcher is the client side of Cruz: the cruz command line (run,
// checkpoint, restart, migrate, status, events, cluster ...), following a
// job's stream with its signals and exit status, and a task of an
// `srun --cruz` step. It talks to cruzd only through internal/api's client
// and holds no state; it never imports the agent or the node side.
package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/cluster"
	"github.com/cruz-hpc/cruz/internal/version"
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// Exit statuses of cruz's own (the job's status is passed on as it is by
// run, restart and attach).
const (
	ExitRefused = 1 // the agent refused the request, or it failed
	ExitUsage   = 2 // a flag or argument is wrong: nothing was asked of the agent
)

// usageErr is a mistake on the command line, found before any request.
type usageErr struct {
	cmd *cobra.Command
	err error
}

func (e usageErr) Error() string { return e.err.Error() }
func (e usageErr) Unwrap() error { return e.err }

// usagef makes a usage error of cmd.
func usagef(cmd *cobra.Command, format string, a ...any) error {
	return usageErr{cmd: cmd, err: fmt.Errorf(format, a...)}
}

// exitStatus ends cruz with a status of its own choosing (a job's), after
// the command has printed what it had to.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// cli holds what every command needs: where to write, and how to reach the
// agent.
type cli struct {
	ctx            context.Context
	stdout, stderr io.Writer
	socket, node   string
	client         *api.Client
}

// agent returns the client of the agent chosen by --socket, --node,
// $CRUZ_SOCKET or the defaults (agentSocket), made on first use.
func (c *cli) agent() (*api.Client, error) {
	if c.client != nil {
		return c.client, nil
	}
	sock, note, err := agentSocket(c.socket, c.node)
	if err != nil {
		return nil, err
	}
	if note != "" {
		fmt.Fprintln(c.stderr, note)
	}
	c.client = api.NewClient(sock)
	return c.client, nil
}

// Main runs the cruz command line and returns its exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &cli{ctx: ctx, stdout: stdout, stderr: stderr}
	root := c.rootCommand()
	root.SetArgs(args)
	return c.exit(root.ExecuteContext(ctx))
}

// exit turns what a command returned into cruz's exit status, saying why on
// stderr.
func (c *cli) exit(err error) int {
	var st exitStatus
	var ue usageErr
	switch {
	case err == nil:
		return 0
	case errors.As(err, &st):
		return int(st)
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "cruz: %v\nusage: %s\n", ue.err, ue.cmd.UseLine())
		if ue.cmd.HasAvailableFlags() || ue.cmd.HasAvailableSubCommands() {
			fmt.Fprintf(c.stderr, "(cruz %s --help says more)\n", strings.TrimPrefix(ue.cmd.CommandPath(), "cruz "))
		}
		return ExitUsage
	case strings.HasPrefix(err.Error(), "unknown command"), strings.HasPrefix(err.Error(), "unknown flag"),
		strings.HasPrefix(err.Error(), "unknown shorthand flag"):
		fmt.Fprintf(c.stderr, "cruz: %v\n(cruz --help lists the commands)\n", err)
		return ExitUsage
	default:
		fmt.Fprintf(c.stderr, "cruz: %v\n", err)
		return ExitRefused
	}
}

const rootLong = `cruz checkpoints, restarts and migrates MPI jobs as a whole, without
changing them: every rank runs in a pod of its own (network, pid, uts, ipc
and mount namespaces, with its own IP and MAC), and a checkpoint saves every
pod with CRIU while a packet filter holds the job's traffic.

JOB is a job id, a job name if unique, or a Slurm job id (1234: the step of
job 1234 that runs, else its latest; 1234.2: step 2), asked of this node's
agent and, if it does not know it, of the others. NODES is a comma-separated
list or a Slurm host list (node[1-4,7]).

The agent's socket is --socket, else that of --node NODE of the virtual
cluster, else $CRUZ_SOCKET, else ` + api.DefaultSocket + ` (or, if no agent
answers there and a virtual cluster is up, node1's, which cruz then says).
The virtual cluster's directory is $CRUZ_CLUSTER_DIR or ` + cluster.DefaultDir + `.

Exit status: run, restart and attach exit with the job's own status (75 if
a checkpoint stopped it); otherwise 0 on success, 1 when the agent refused
or failed, 2 for a mistake on the command line (nothing was asked).`

func (c *cli) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "cruz",
		Short:         "checkpoint, restart and migrate MPI jobs",
		Long:          rootLong,
		Version:       version.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
		// Completion scripts come from `cruz completion bash|zsh|fish`.
		CompletionOptions: cobra.CompletionOptions{HiddenDefaultCmd: false},
	}
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.SetVersionTemplate("cruz {{.Version}}\n")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usageErr{cmd: cmd, err: err} })
	pf := root.PersistentFlags()
	pf.StringVar(&c.socket, "socket", "", "the agent's unix socket")
	pf.StringVar(&c.node, "node", "", "talk to this node's agent (a node of the virtual cluster)")
	root.AddCommand(c.runCommand(), c.restartCommand(), c.attachCommand(), c.checkpointCommand(),
		c.statusCommand(), c.checkpointsCommand(), c.eventsCommand(), c.historyCommand(), c.signalCommand(), c.rmCommand(),
		c.migrateCommand(), c.drainCommand(), c.dfCommand(), c.reportCommand(), c.versionCommand(), c.slurmEndCommand(), c.clusterCommand(),
		c.manCommand())
	for _, sub := range root.Commands() {
		sub.SetFlagErrorFunc(root.FlagErrorFunc())
	}
	return root
}

// args checks a command's number of positional arguments, as a usage error.
func args(min, max int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		switch {
		case len(a) < min:
			return usagef(cmd, "missing arguments")
		case len(a) > max:
			return usagef(cmd, "too many arguments: %q", a[max:])
		}
		return nil
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// manCommand writes the man pages of cruz and its commands (make install
// and the packages run it; hidden from users).
func (c *cli) manCommand() *cobra.Command {
	cmd := command("man DIR", "write the man pages into DIR", "", [2]int{1, 1},
		func(cmd *cobra.Command, a []string) error {
			root := cmd.Root()
			root.DisableAutoGenTag = true
			return doc.GenManTree(root, &doc.GenManHeader{Title: "CRUZ", Section: "1", Source: "Cruz " + version.Release, Manual: "Cruz"}, a[0])
		})
	cmd.Hidden = true
	return cmd
}
