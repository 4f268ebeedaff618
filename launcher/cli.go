// Package launcher is the client side of Cruz: the cruz command line (run,
// checkpoint, restart, migrate, status, events, cluster ...), following a
// job's stream with its signals and exit status, and a task of an
// `srun --cruz` step. It talks to cruzd only through internal/api's client
// and holds no state; it never imports the agent or the node side.
package launcher

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/cluster"
)

const usage = `usage: cruz [--socket PATH | --node NODE] COMMAND [ARGS]

Commands:
  run [--name NAME] [--np N] [--nodes N1,N2,..] [--plain]
      [--interval DURATION|auto|off] [--keep K] [--spares K] [--restart auto|never]
      -- CMD ARGS...
                        start an MPI job of N ranks, each in its own pod, and
                        stream its output; exits with the job's status
                        (75 if a checkpoint stopped it); with --np 1 (the
                        default) or --plain, CMD runs as is in one pod; the
                        ranks are spread in blocks over --nodes (default:
                        every node of the cluster); the policy engine
                        checkpoints it every --interval (auto: Young/Daly),
                        keeps the last --keep checkpoints, and after a
                        failure rolls it back to the last one, on healthy
                        nodes and the --spares nodes it holds back
  checkpoint [--stop] [--json] JOB
                        checkpoint a running job; --stop ends it there
  restart [--checkpoint ID] [--nodes N1,N2,..] JOB
                        restore a job from a checkpoint (default: the latest
                        good one) and stream it like run; --nodes restores
                        its pods there (mpiexec on the first, ranks spread
                        in blocks), else where they were
  migrate --rank R | --pod NAME --to NODE [--json] JOB
                        move one pod of a running job to NODE, live; prints
                        the downtime the pod saw
  drain [--json] NODE   (root) move every pod off NODE
  status [--json] [JOB] list your jobs, or show one
  events [--json] JOB   what happened to a job and what the agent decided
  checkpoints [--json] JOB
                        list a job's checkpoints (ids, times, sizes, phases)
  attach JOB            stream a running job's output
  signal JOB SIGNAL     send a signal (name or number) to a job
  rm [--checkpoints] JOB
                        end a job and forget it (and delete its checkpoints)
  version               show the versions of cruz, the agent and CRIU
  slurm-end [--step S] [--reason TEXT] SLURM_JOB_ID
                        remove the pods of a Slurm job's srun --cruz steps
                        (their checkpoints stay); the SPANK plugin's epilog
                        runs it on every node
  cluster up [--nodes N] [--subnet CIDR] [--store DIR] [--lan NAME] [--dir DIR]
             [--slurm]
                        (root) start a local virtual cluster of N nodes,
                        each a cruzd in its own network namespace;
                        --slurm also starts a Slurm cluster over them
  cluster status [--json] [--dir DIR]
                        list the virtual cluster's nodes (and its Slurm)
  cluster env [--node NODE] [--dir DIR]
                        print export CRUZ_SOCKET=... for node1 (or NODE),
                        and SLURM_CONF=... if Slurm runs
  cluster restart [--kill] [--dir DIR] NODE
                        (root) restart NODE's agent (--kill: crash it; the
                        new agent takes back the pods it held)
  cluster fail [--dir DIR] NODE
                        (root) make NODE fail as a dead machine does (drill)
  cluster down [--purge] [--lan NAME] [--dir DIR]
                        (root) stop the virtual cluster (and its Slurm) and
                        remove it; --purge also deletes its checkpoint store

JOB is a job id, a job name if unique, or a Slurm job id (1234: the step of
job 1234 that runs, else its latest; 1234.2: step 2), asked of this node's
agent and, if it does not know it, of the others. The agent's socket is --socket,
else that of --node NODE of the virtual cluster, else $CRUZ_SOCKET, else
` + api.DefaultSocket + ` (or, if no agent answers there and a virtual
cluster is up, node1's). The virtual cluster's directory is $CRUZ_CLUSTER_DIR
or ` + cluster.DefaultDir + `.
`

// Main runs the cruz command line and returns its exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	global := flag.NewFlagSet("cruz", flag.ContinueOnError)
	global.SetOutput(stderr)
	global.Usage = func() { fmt.Fprint(stderr, usage) }
	socket := global.String("socket", "", "the agent's unix socket")
	node := global.String("node", "", "a node of the virtual cluster (cruz cluster status lists them)")
	if err := global.Parse(args); err != nil {
		return 2
	}
	if global.NArg() == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := global.Arg(0), global.Args()[1:]
	if cmd == "cluster" {
		return cmdCluster(ctx, rest, stdout, stderr)
	}
	sock, note, err := agentSocket(*socket, *node)
	if err != nil {
		return fail(stderr, err)
	}
	if note != "" {
		fmt.Fprintln(stderr, note)
	}
	c := api.NewClient(sock)
	cmds := map[string]func(context.Context, *api.Client, []string, io.Writer, io.Writer) int{
		"run": cmdRun, "checkpoint": cmdCheckpoint, "restart": cmdRestart, "status": cmdStatus,
		"checkpoints": cmdCheckpoints, "attach": cmdAttach, "signal": cmdSignal, "rm": cmdRemove,
		"version": cmdVersion, "migrate": cmdMigrate, "drain": cmdDrain, "events": cmdEvents,
		"slurm-end": cmdSlurmEnd,
	}
	run, ok := cmds[cmd]
	if !ok {
		if cmd == "help" || cmd == "-h" {
			fmt.Fprint(stdout, usage)
			return 0
		}
		fmt.Fprintf(stderr, "cruz: unknown command %q\n%s", cmd, usage)
		return 2
	}
	return run(ctx, c, rest, stdout, stderr)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// parse parses flags that may come before or after the positional
// arguments (cruz checkpoint JOB --stop) and checks their number.
func parse(fs *flag.FlagSet, args []string, minPos, maxPos int, what string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) < minPos || len(pos) > maxPos {
		return nil, fmt.Errorf("usage: cruz %s %s", fs.Name(), what)
	}
	return pos, nil
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// fail prints an error the way every cruz command does and returns 1.
func fail(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "cruz: %v\n", err)
	return 1
}

func usageError(stderr io.Writer, err error) int {
	if !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stderr, "cruz: %v\n", err)
	}
	return 2
}

func cmdRun(ctx context.Context, c *api.Client, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("run", stderr)
	name := fs.String("name", "", "job name (default: the command's name)")
	np := fs.Int("np", 1, "number of MPI ranks, one pod each (1: CMD runs as is in one pod)")
	plain := fs.Bool("plain", false, "run CMD as is in one pod, without mpiexec (the default for --np 1)")
	nodes := fs.String("nodes", "", "comma-separated nodes to spread the ranks over (default: every node)")
	interval := fs.String("interval", "", "periodic checkpoints: a duration (30s, 10m), auto (Young/Daly) or off (default: the cluster's policy)")
	keep := fs.Int("keep", 0, "complete checkpoints to keep (default: the cluster's policy)")
	spares := fs.Int("spares", 0, "nodes (the last of --nodes, or of the cluster) held back to replace failed ones")
	restart := fs.String("restart", "", "after a failure: auto (roll back to the last checkpoint) or never (default: the cluster's policy)")
	if err := fs.Parse(args); err != nil {
		return usageError(stderr, err)
	}
	nodeList, err := splitNodes(*nodes)
	if err != nil {
		return usageError(stderr, err)
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return usageError(stderr, errors.New("usage: cruz run [--name NAME] [--np N] [--plain] -- CMD ARGS..."))
	}
	dir, err := os.Getwd()
	if err != nil {
		return fail(stderr, fmt.Errorf("find the working directory: %w", err))
	}
	// One rank needs no mpiexec: a non-MPI command runs as it is, and an MPI
	// program initialises as an MPICH singleton.
	if *np == 1 {
		*plain = true
	}
	s, err := c.Run(ctx, api.RunRequest{Name: *name, NP: *np, Argv: argv, Env: os.Environ(), Dir: dir, Plain: *plain, Nodes: nodeList,
		Interval: *interval, Keep: *keep, Spares: *spares, Restart: *restart})
	if err != nil {
		return fail(stderr, err)
	}
	return Follow(ctx, c, s, stdout, stderr)
}

func cmdRestart(ctx context.Context, c *api.Client, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("restart", stderr)
	ckpt := fs.String("checkpoint", "", "checkpoint id (default: the latest good one)")
	nodes := fs.String("nodes", "", "comma-separated nodes to restore the pods on (default: where they were)")
	pos, err := parse(fs, args, 1, 1, "[--checkpoint ID] [--nodes N1,N2,..] JOB")
	if err != nil {
		return usageError(stderr, err)
	}
	nodeList, err := splitNodes(*nodes)
	if err != nil {
		return usageError(stderr, err)
	}
	s, err := c.Restart(ctx, pos[0], api.RestartRequest{Checkpoint: *ckpt, Nodes: nodeList})
	if err != nil {
		return fail(stderr, err)
	}
	return Follow(ctx, c, s, stdout, stderr)
}

func cmdAttach(ctx context.Context, c *api.Client, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("attach", stderr)
	pos, err := parse(fs, args, 1, 1, "JOB")
	if err != nil {
		return usageError(stderr, err)
	}
	s, err := c.Attach(ctx, pos[0])
	if err != nil {
		return fail(stderr, err)
	}
	return Follow(ctx, c, s, stdout, stderr)
}

func cmdCheckpoint(ctx context.Context, c *api.Client, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("checkpoint", stderr)
	stop := fs.Bool("stop", false, "stop the job with this checkpoint (cruz restart resumes it)")
	asJSON := fs.Bool("json", false, "print the checkpoint as JSON")
	pos, err := parse(fs, args, 1, 1, "[--stop] [--json] JOB")
	if err != nil {
		return usageError(stderr, err)
	}
	ck, err := c.Checkpoint(ctx, pos[0], api.CheckpointRequest{Stop: *stop})
	if err != nil {
		return fail(stderr, err)
	}
	if *asJSON {
		return printJSON(stdout, stderr, ck)
	}
	fmt.Fprintln(stdout, ck.ID)
	return 0
}

func cmdStatus(ctx context.Context, c *api.Client, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("status", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parse(fs, args, 0, 1, "[--json] [JOB]")
	if err != nil {
		return usageError(stderr, err)
	}
	var jobs []api.Job
	if len(pos) == 1 {
		j, err := c.Job(ctx, pos[0])
		if err != nil {
			return fail(stderr, err)
		}
		if *asJSON {
			return printJSON(stdout, stderr, j)
		}
		jobs = []api.Job{j}
	} else {
		if jobs, err = c.Jobs(ctx); err != nil {
			return fail(stderr, err)
		}
		if *asJSON {
			return printJSON(stdout, stderr, api.JobList{Jobs: jobs})
		}
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tNAME\tUSER\tSTATE\tRANKS\tCHECKPOINTS\tLAST\tCREATED")
	for _, j := range jobs {
		state := string(j.State)
		if j.ExitCode != nil {
			state += " (" + strconv.Itoa(*j.ExitCode) + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", j.ID, j.Name, j.User, state, j.NP, j.Checkpoints,
			dash(j.LastCheckpoint), j.Created.Local().Format(time.DateTime))
	}
	tw.Flush()
	if len(pos) == 1 && len(jobs) == 1 {
		j := jobs[0]
		if j.Message != "" {
			fmt.Fprintf(stdout, "\n%s\n", j.Message)
		}
		fmt.Fprintln(stdout)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "POD\tROLE\tNODE\tIP\tMAC\tPID")
		for _, p := range j.Pods {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.Role, p.Node, p.IP, p.MAC, pidString(p.PID))
		}
		tw.Flush()
	}
	return 0
}

func cmdCheckpoints(ctx context.Context, c *api.Client, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("checkpoints", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parse(fs, args, 1, 1, "[--json] JOB")
	if err != nil {
		return usageError(stderr, err)
	}
	l, err := c.Checkpoints(ctx, pos[0])
	if err != nil {
		return fail(stderr, err)
	}
	if *asJSON {
		return printJSON(stdout, stderr, l)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECKPOINT\tCREATED\tSIZE\tSTOPPED\tBLOCK\tDUMP\tCOMMIT\tTOTAL")
	for _, ck := range l.Checkpoints {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%dms\t%dms\t%dms\t%dms\n", ck.ID, ck.Created.Local().Format(time.DateTime),
			humanBytes(ck.Bytes), ck.Stopped, ck.Phases["block"], ck.Phases["dump"], ck.Phases["commit"], ck.Phases["total"])
	}
	tw.Flush()
	for _, p := range l.Problems {
		fmt.Fprintf(stderr, "cruz: skipped: %s\n", p)
	}
	return 0
}

func cmdSignal(ctx context.Context, c *api.Client, args []string, _, stderr io.Writer) int {
	fs := newFlags("signal", stderr)
	pos, err := parse(fs, args, 2, 2, "JOB SIGNAL")
	if err != nil {
		return usageError(stderr, err)
	}
	sig, err := parseSignal(pos[1])
	if err != nil {
		return usageError(stderr, err)
	}
	if err := c.Signal(ctx, pos[0], int(sig)); err != nil {
		return fail(stderr, err)
	}
	return 0
}

func cmdRemove(ctx context.Context, c *api.Client, args []string, _, stderr io.Writer) int {
	fs := newFlags("rm", stderr)
	ckpts := fs.Bool("checkpoints", false, "also delete the job's checkpoints")
	pos, err := parse(fs, args, 1, 1, "[--checkpoints] JOB")
	if err != nil {
		return usageError(stderr, err)
	}
	if err := c.Remove(ctx, pos[0], *ckpts); err != nil {
		return fail(stderr, err)
	}
	return 0
}

func cmdVersion(ctx context.Context, c *api.Client, _ []string, stdout, stderr io.Writer) int {
	v, err := c.Version(ctx)
	if err != nil {
		return fail(stderr, err)
	}
	fmt.Fprintf(stdout, "agent %s on %s, CRIU %s\n", v.Agent, v.Node, v.CRIU)
	return 0
}

func printJSON(stdout, stderr io.Writer, v any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fail(stderr, err)
	}
	return 0
}

var signalNames = map[string]syscall.Signal{
	"HUP": syscall.SIGHUP, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT, "KILL": syscall.SIGKILL,
	"USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "TERM": syscall.SIGTERM, "CONT": syscall.SIGCONT,
	"STOP": syscall.SIGSTOP, "ALRM": syscall.SIGALRM,
}

func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	if sig, ok := signalNames[strings.TrimPrefix(strings.ToUpper(s), "SIG")]; ok {
		return sig, nil
	}
	names := make([]string, 0, len(signalNames))
	for n := range signalNames {
		names = append(names, n)
	}
	sort.Strings(names)
	return 0, fmt.Errorf("unknown signal %q: use a number or one of %s", s, strings.Join(names, ", "))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func pidString(pid int) string {
	if pid == 0 {
		return "-"
	}
	return strconv.Itoa(pid)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

// splitNodes parses a --nodes list: comma-separated node names.
func splitNodes(s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	var out []string
	for _, n := range strings.Split(s, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			return nil, fmt.Errorf("--nodes %q has an empty name: give node names separated by commas, e.g. --nodes node2,node4", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func cmdMigrate(ctx context.Context, c *api.Client, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("migrate", stderr)
	rank := fs.Int("rank", -1, "the rank whose pod moves")
	pod := fs.String("pod", "", "the pod that moves (instead of --rank), e.g. JOB-mpiexec")
	to := fs.String("to", "", "the node it moves to")
	asJSON := fs.Bool("json", false, "print the migration as JSON")
	const what = "--rank R | --pod NAME --to NODE [--json] JOB"
	pos, err := parse(fs, args, 1, 1, what)
	if err != nil {
		return usageError(stderr, err)
	}
	req := api.MigrateRequest{Pod: *pod, To: *to}
	if *rank >= 0 {
		req.Rank = rank
	}
	if (req.Rank == nil) == (*pod == "") || *to == "" {
		return usageError(stderr, errors.New("usage: cruz migrate "+what+" (give one of --rank and --pod, and --to)"))
	}
	var m api.Migration
	if err := c.Call(ctx, "POST", "/v1/jobs/"+url.PathEscape(pos[0])+"/migrate", req, &m); err != nil {
		return fail(stderr, err)
	}
	if *asJSON {
		return printJSON(stdout, stderr, m)
	}
	fmt.Fprintf(stdout, "%s moved from %s to %s: downtime %d ms (dump %d ms, restore %d ms, %s)\n",
		m.Pod, m.From, m.To, m.DowntimeMS, m.DumpMS, m.RestoreMS, humanBytes(m.Bytes))
	return 0
}

func cmdDrain(ctx context.Context, c *api.Client, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("drain", stderr)
	asJSON := fs.Bool("json", false, "print the migrations as JSON")
	pos, err := parse(fs, args, 1, 1, "[--json] NODE")
	if err != nil {
		return usageError(stderr, err)
	}
	var res api.DrainResult
	if err := c.Call(ctx, "POST", "/v1/drain", api.DrainRequest{Node: pos[0]}, &res); err != nil {
		return fail(stderr, err)
	}
	if *asJSON {
		return printJSON(stdout, stderr, res)
	}
	for _, m := range res.Migrations {
		fmt.Fprintf(stdout, "%s moved from %s to %s: downtime %d ms\n", m.Pod, m.From, m.To, m.DowntimeMS)
	}
	fmt.Fprintf(stdout, "node %s is drained: %d pods moved\n", res.Node, len(res.Migrations))
	return 0
}

func cmdEvents(ctx context.Context, c *api.Client, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("events", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parse(fs, args, 1, 1, "[--json] JOB")
	if err != nil {
		return usageError(stderr, err)
	}
	var list api.EventList
	if err := c.Call(ctx, "GET", "/v1/jobs/"+url.PathEscape(pos[0])+"/events", nil, &list); err != nil {
		return fail(stderr, err)
	}
	if *asJSON {
		return printJSON(stdout, stderr, list)
	}
	for _, e := range list.Events {
		fmt.Fprintf(stdout, "%s  %-18s %s\n", e.Time.Local().Format("15:04:05.000"), e.Kind, e.Message)
	}
	return 0
}

func cmdSlurmEnd(ctx context.Context, c *api.Client, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("slurm-end", stderr)
	step := fs.Int("step", -1, "only this step of the job")
	reason := fs.String("reason", "", "why, for the job's event log")
	pos, err := parse(fs, args, 1, 1, "[--step S] [--reason TEXT] SLURM_JOB_ID")
	if err != nil {
		return usageError(stderr, err)
	}
	id, err := strconv.ParseUint(pos[0], 10, 32)
	if err != nil || id == 0 {
		return usageError(stderr, fmt.Errorf("Slurm job id %q is not a positive number", pos[0]))
	}
	req := api.SlurmEndRequest{JobID: uint32(id), Reason: *reason}
	if *step >= 0 {
		s := uint32(*step)
		req.StepID = &s
	}
	res, err := c.SlurmEnd(ctx, req)
	if err != nil {
		return fail(stderr, err)
	}
	for _, j := range res.Jobs {
		fmt.Fprintf(stdout, "ended job %s\n", j)
	}
	for _, p := range res.Pods {
		fmt.Fprintf(stdout, "removed pod %s\n", p)
	}
	return 0
}
