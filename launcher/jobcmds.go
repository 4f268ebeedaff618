package launcher

// The commands that act on jobs. Every flag is checked here, before any
// request, so a mistake costs nothing and is named with its flag.

import (
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/mpi"
	"github.com/spf13/cobra"
)

// maxRanks is the largest --np the agents take (one pod per rank).
const maxRanks = 256

// command makes a subcommand with cruz's conventions: the use line written
// out in full (flags included), positional arguments checked as usage
// errors, and run given the command.
func command(use, short, long string, nargs [2]int, run func(cmd *cobra.Command, args []string) error) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Long: long, Args: args(nargs[0], nargs[1]), RunE: run,
		DisableFlagsInUseLine: true}
}

func (c *cli) runCommand() *cobra.Command {
	var req api.RunRequest
	var nodes, interval, restart, mpiFlag string
	var detach bool
	cmd := command("run [--name NAME] [--np N] [--mpi auto|mpich|openmpi] [--nodes NODES] [--ranks-per-pod K] [--plain] [--interval DURATION|auto|off] [--keep K] [--spares K] [--restart auto|never] [--detach] -- CMD ARGS...",
		"start a job and stream its output",
		`Start an MPI job of N ranks, each in its own pod, and stream its output;
cruz exits with the job's status (75 if a checkpoint stopped it). With
--np 1 (the default) or --plain, CMD runs as it is in one pod. The ranks
are spread in blocks over --nodes (default: every node of the cluster),
mpiexec's pod on this node. The policy engine checkpoints the job every
--interval (auto: Young/Daly's optimum), keeps the last --keep checkpoints,
and after a failure rolls it back to the last one, on healthy nodes and the
--spares nodes it holds back. The job's id is printed on stderr; with
--detach it is printed on stdout and cruz returns at once (follow the job
with cruz attach JOB). The MPI that starts the ranks is the one CMD links
(MPICH or Open MPI), or --mpi: an interpreter such as python3 links none,
so an mpi4py script needs --mpi openmpi (or mpich). --ranks-per-pod K puts up
to K ranks of a node in one pod, where MPI may use shared memory between
them; such a pod is checkpointed, restored and migrated as a whole.`, [2]int{1, 1 << 20},
		func(cmd *cobra.Command, argv []string) error {
			var err error
			if req.NP < 1 || req.NP > maxRanks {
				return usagef(cmd, "--np %d is out of range: give a number of ranks from 1 to %d", req.NP, maxRanks)
			}
			if req.RanksPerPod < 1 || req.RanksPerPod > maxRanks {
				return usagef(cmd, "--ranks-per-pod %d is out of range: give how many ranks of a node may share a pod, from 1 (the default: a pod per rank) to %d", req.RanksPerPod, maxRanks)
			}
			if req.Nodes, err = parseNodes(nodes); err != nil {
				return usagef(cmd, "%v", err)
			}
			if err := checkInterval(interval); err != nil {
				return usagef(cmd, "%v", err)
			}
			if req.Keep < 0 {
				return usagef(cmd, "--keep %d: keep at least 1 checkpoint (0: the cluster's policy)", req.Keep)
			}
			if req.Spares < 0 {
				return usagef(cmd, "--spares %d: give a number of nodes to hold back, 0 or more", req.Spares)
			}
			if restart != "" && restart != "auto" && restart != "never" {
				return usagef(cmd, "--restart %q: give auto (roll back after a failure) or never", restart)
			}
			req.Interval, req.Restart, req.Argv = interval, restart, argv
			if req.Dir, err = os.Getwd(); err != nil {
				return fmt.Errorf("find the working directory: %w", err)
			}
			req.Env = os.Environ()
			// One rank needs no mpiexec: a non-MPI command runs as it is, and
			// an MPI program initialises as a singleton.
			if req.NP == 1 {
				req.Plain = true
			}
			if req.Plain && req.RanksPerPod > 1 {
				return usagef(cmd, "--ranks-per-pod %d is for MPI jobs of 2 or more ranks (--np); a plain job runs in one pod", req.RanksPerPod)
			}
			kind, err := mpi.ParseKind(mpiFlag)
			if err != nil {
				return usagef(cmd, "--mpi: %v", err)
			}
			if !req.Plain {
				found, err := mpi.Choose(kind, argv[0], req.Env, req.Dir)
				if err != nil {
					return usagef(cmd, "%v", err)
				}
				req.MPI = string(found)
			}
			a, err := c.agent()
			if err != nil {
				return err
			}
			s, err := a.Run(c.ctx, req)
			if err != nil {
				return err
			}
			if detach {
				return c.detach(s)
			}
			return exitStatus(followAnnounced(c.ctx, a, s, c.stdout, c.stderr))
		})
	f := cmd.Flags()
	f.SetInterspersed(false) // what follows the command is the command's
	f.StringVar(&req.Name, "name", "", "job name (default: the command's name)")
	f.IntVar(&req.NP, "np", 1, "number of MPI ranks, one pod each (1: CMD runs as is in one pod)")
	f.StringVar(&mpiFlag, "mpi", "auto", "the MPI that starts the ranks: auto (the one CMD links), mpich or openmpi")
	f.IntVar(&req.RanksPerPod, "ranks-per-pod", 1, "ranks of a node that share one pod, and may share memory (1: a pod per rank)")
	f.BoolVar(&req.Plain, "plain", false, "run CMD as is in one pod, without mpiexec (the default for --np 1)")
	f.StringVar(&nodes, "nodes", "", "nodes to spread the ranks over (default: every node)")
	f.StringVar(&interval, "interval", "", "periodic checkpoints: a duration (30s, 10m), auto (Young/Daly) or off (default: the cluster's policy)")
	f.IntVar(&req.Keep, "keep", 0, "complete checkpoints to keep (default: the cluster's policy)")
	f.IntVar(&req.Spares, "spares", 0, "nodes (the last of --nodes, or of the cluster) held back to replace failed ones")
	f.StringVar(&restart, "restart", "", "after a failure: auto (roll back to the last checkpoint) or never (default: the cluster's policy)")
	f.BoolVarP(&detach, "detach", "d", false, "print the job's id and return once it has started")
	return cmd
}

// detach reads a run's first frame (sent once the job has started), prints
// the job's id and leaves the job running. A job that could not start is
// followed to its end, so that cruz says why and exits with its status.
func (c *cli) detach(s *api.Stream) error {
	f, err := s.Next()
	if err != nil {
		s.Close()
		return fmt.Errorf("the agent answered no job: %w", err)
	}
	if f.Job == nil || f.Job.State == api.StateFailed {
		id := ""
		if f.Job != nil {
			id = f.Job.ID
		}
		code := followSignals(c.ctx, s, c.stdout, c.stderr, notifyForwarded(), func(string, os.Signal) {})
		if code == 0 {
			code = ExitRefused
		}
		fmt.Fprintf(c.stderr, "cruz: job %s did not start\n", id)
		return exitStatus(code)
	}
	s.Close()
	fmt.Fprintln(c.stdout, f.Job.ID)
	return nil
}

// checkInterval checks an --interval value as the agent will.
func checkInterval(v string) error {
	switch v {
	case "", "auto", "off":
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Second {
		return fmt.Errorf("--interval %q is not a duration of at least 1s (e.g. 30s, 10m), \"auto\" or \"off\"", v)
	}
	return nil
}

// parseNodes reads a --nodes value: names separated by commas, each of them
// possibly a Slurm host list (node[1-4,7]).
func parseNodes(s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	if strings.Contains(s, ",,") || strings.HasPrefix(s, ",") || strings.HasSuffix(s, ",") || strings.TrimSpace(s) != s {
		return nil, fmt.Errorf("--nodes %q has an empty name: give node names separated by commas, e.g. --nodes node2,node4 or node[2-4]", s)
	}
	nodes, err := ExpandHostlist(s)
	if err != nil {
		return nil, fmt.Errorf("--nodes %q: %v", s, err)
	}
	seen := map[string]bool{}
	for _, n := range nodes {
		if n == "" {
			return nil, fmt.Errorf("--nodes %q has an empty name: give node names separated by commas, e.g. --nodes node2,node4", s)
		}
		if seen[n] {
			return nil, fmt.Errorf("--nodes %q names %s twice", s, n)
		}
		seen[n] = true
	}
	return nodes, nil
}

func (c *cli) restartCommand() *cobra.Command {
	var ckpt, nodes string
	cmd := command("restart [--checkpoint ID] [--nodes NODES] JOB", "restore a job from a checkpoint and stream it",
		`Restore a job from a checkpoint (default: the latest good one) and stream it
like run. With --nodes the pods are restored there (mpiexec on the first,
ranks spread in blocks), else where they were. The restore's progress goes
to stderr (see cruz checkpoint) before the job's output.`, [2]int{1, 1},
		func(cmd *cobra.Command, a []string) error {
			nodeList, err := parseNodes(nodes)
			if err != nil {
				return usagef(cmd, "%v", err)
			}
			ag, err := c.agent()
			if err != nil {
				return err
			}
			s, err := ag.Restart(c.ctx, a[0], api.RestartRequest{Checkpoint: ckpt, Nodes: nodeList, Progress: true})
			if err != nil {
				return err
			}
			return exitStatus(Follow(c.ctx, ag, s, c.stdout, c.stderr))
		})
	cmd.Flags().StringVar(&ckpt, "checkpoint", "", "checkpoint id (default: the latest good one)")
	cmd.Flags().StringVar(&nodes, "nodes", "", "nodes to restore the pods on (default: where they were)")
	return cmd
}

func (c *cli) attachCommand() *cobra.Command {
	return command("attach JOB", "stream a running job's output", "Stream a running job's output from the start of its current run.", [2]int{1, 1},
		func(_ *cobra.Command, a []string) error {
			ag, err := c.agent()
			if err != nil {
				return err
			}
			s, err := ag.Attach(c.ctx, a[0])
			if err != nil {
				return err
			}
			return exitStatus(Follow(c.ctx, ag, s, c.stdout, c.stderr))
		})
}

func (c *cli) checkpointCommand() *cobra.Command {
	var stop, asJSON bool
	var wait time.Duration
	cmd := command("checkpoint [--stop] [--wait DURATION] [--json] JOB", "checkpoint a running job",
		`Take a coordinated checkpoint of every pod of a running job and print its
id; with --stop the job ends there (cruz restart resumes it). Its progress
(phase, pods dumped, bytes written) goes to stderr: a bar on a terminal, a
line per step otherwise, JSON lines ({"progress": ...}) with --json. If the job is busy
with another operation (a periodic checkpoint, a migration), cruz waits for
it to end, up to --wait (default 2m; --wait 0 refuses at once).`, [2]int{1, 1},
		func(cmd *cobra.Command, a []string) error {
			if wait < 0 || wait > time.Hour || wait%time.Second != 0 {
				return usagef(cmd, "--wait %s is not a whole number of seconds from 0 to 1h (e.g. --wait 30s)", wait)
			}
			ag, err := c.agent()
			if err != nil {
				return err
			}
			view := c.progressView(asJSON)
			f, err := ag.Progressing(c.ctx, "POST", "/v1/jobs/"+url.PathEscape(a[0])+"/checkpoint",
				api.CheckpointRequest{Stop: stop, WaitSeconds: int(wait / time.Second), Progress: true}, view.show)
			view.end()
			if err != nil {
				return err
			}
			if f.Checkpoint == nil {
				return fmt.Errorf("the agent answered no checkpoint")
			}
			ck := *f.Checkpoint
			if asJSON {
				return printJSON(c.stdout, ck)
			}
			fmt.Fprintln(c.stdout, ck.ID)
			return nil
		})
	cmd.Flags().BoolVar(&stop, "stop", false, "stop the job with this checkpoint (cruz restart resumes it)")
	// A user who asks for a checkpoint wants one: meeting the policy's
	// periodic checkpoint is common (every few seconds with a short
	// interval), and "busy, try again" made scripts loop.
	cmd.Flags().DurationVar(&wait, "wait", 2*time.Minute, "wait up to this long for an operation under way on the job (0: refuse at once)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the checkpoint as JSON, and the progress as JSON lines on stderr")
	return cmd
}

func (c *cli) statusCommand() *cobra.Command {
	var asJSON, all bool
	var userName, stateList string
	cmd := command("status [--json] [JOB] | status --all [-u USER] [-t STATE,...] [--json]", "list your jobs, or show one; --all: the whole cluster's",
		`List your jobs on this node's agent, or show one job with its pods.

With --all, list the jobs of every node of the cluster (every agent in
cluster.peers is asked at once; a node that does not answer within 3 s is
named on stderr), oldest first, like squeue: id, owner, state, nodes and age
of every user's job; the name and command line of your own (and of others'
if the admin allows it: status.show_commands). -u USER and -t STATE (one or
more of starting, running, restoring, stopped, exited, failed, lost,
cancelled, separated by commas) keep only those jobs, and imply --all.`, [2]int{0, 1},
		func(cmd *cobra.Command, a []string) error {
			var states []api.JobState
			if userName != "" || stateList != "" {
				all = true
			}
			if all && len(a) == 1 {
				return usagef(cmd, "--all lists every job: give no JOB with --all, -u or -t")
			}
			if stateList != "" {
				var err error
				if states, err = parseStates(stateList); err != nil {
					return usagef(cmd, "%v", err)
				}
			}
			if userName != "" {
				if err := checkUser(userName); err != nil {
					return usagef(cmd, "%v", err)
				}
			}
			ag, err := c.agent()
			if err != nil {
				return err
			}
			if all {
				q, err := ag.Queue(c.ctx)
				if err != nil {
					return err
				}
				q.Jobs = filterQueue(q.Jobs, userName, states)
				warnUnreachable(c.stderr, q)
				if asJSON {
					return printJSON(c.stdout, q)
				}
				printQueue(c.stdout, q.Jobs, time.Now())
				return nil
			}
			var jobs []api.Job
			if len(a) == 1 {
				j, err := ag.Job(c.ctx, a[0])
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(c.stdout, j)
				}
				jobs = []api.Job{j}
			} else {
				if jobs, err = ag.Jobs(c.ctx); err != nil {
					return err
				}
				if asJSON {
					return printJSON(c.stdout, api.JobList{Jobs: jobs})
				}
			}
			printJobs(c.stdout, jobs, len(a) == 1)
			return nil
		})
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVarP(&all, "all", "a", false, "list the jobs of every node and user of the cluster")
	cmd.Flags().StringVarP(&userName, "user", "u", "", "with --all: only USER's jobs")
	cmd.Flags().StringVarP(&stateList, "state", "t", "", "with --all: only jobs in these states (comma-separated)")
	return cmd
}

func printJobs(w interface{ Write([]byte) (int, error) }, jobs []api.Job, one bool) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
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
	if !one || len(jobs) != 1 {
		return
	}
	j := jobs[0]
	if j.Message != "" {
		fmt.Fprintf(w, "\n%s\n", j.Message)
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tROLE\tNODE\tIP\tMAC\tPID")
	for _, p := range j.Pods {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.Role, p.Node, p.IP, p.MAC, pidString(p.PID))
	}
	tw.Flush()
}

func (c *cli) checkpointsCommand() *cobra.Command {
	var asJSON bool
	cmd := command("checkpoints [--json] JOB", "list a job's checkpoints", "List a job's checkpoints: ids, times, sizes, and how long each phase took.", [2]int{1, 1},
		func(_ *cobra.Command, a []string) error {
			ag, err := c.agent()
			if err != nil {
				return err
			}
			l, err := ag.Checkpoints(c.ctx, a[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(c.stdout, l)
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CHECKPOINT\tCREATED\tSIZE\tSTOPPED\tBLOCK\tDUMP\tHELD\tCOMMIT\tTOTAL")
			for _, ck := range l.Checkpoints {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%dms\t%dms\t%dms\t%dms\t%dms\n", ck.ID, ck.Created.Local().Format(time.DateTime),
					humanBytes(ck.Bytes), ck.Stopped, ck.Phases["block"], ck.Phases["dump"], ck.Phases["held"], ck.Phases["commit"], ck.Phases["total"])
			}
			tw.Flush()
			for _, p := range l.Problems {
				fmt.Fprintf(c.stderr, "cruz: skipped: %s\n", p)
			}
			return nil
		})
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (c *cli) signalCommand() *cobra.Command {
	return command("signal JOB SIGNAL", "send a signal to a job", "Send a signal (a name such as TERM, or a number) to a job's main process.", [2]int{2, 2},
		func(cmd *cobra.Command, a []string) error {
			sig, err := parseSignal(a[1])
			if err != nil {
				return usagef(cmd, "%v", err)
			}
			ag, err := c.agent()
			if err != nil {
				return err
			}
			return ag.Signal(c.ctx, a[0], int(sig))
		})
}

func (c *cli) rmCommand() *cobra.Command {
	var ckpts bool
	cmd := command("rm [--checkpoints] JOB", "end a job and forget it", "End a job (its pods go) and forget it; with --checkpoints also delete its checkpoints.", [2]int{1, 1},
		func(_ *cobra.Command, a []string) error {
			ag, err := c.agent()
			if err != nil {
				return err
			}
			return ag.Remove(c.ctx, a[0], ckpts)
		})
	cmd.Flags().BoolVar(&ckpts, "checkpoints", false, "also delete the job's checkpoints")
	return cmd
}

func (c *cli) versionCommand() *cobra.Command {
	return command("version", "the versions of cruz, the agent and CRIU", "Print the versions of cruz and, if an agent answers, of the agent and its CRIU.", [2]int{0, 0},
		func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(c.stdout, "cruz %s\n", cmd.Root().Version)
			ag, err := c.agent()
			if err != nil {
				return err
			}
			v, err := ag.Version(c.ctx)
			if err != nil {
				return err
			}
			criuFrom := ""
			if v.CRIUSource != "" {
				criuFrom = " (" + v.CRIUSource + ")"
			}
			fmt.Fprintf(c.stdout, "agent %s on %s, CRIU %s%s\n", v.Agent, v.Node, v.CRIU, criuFrom)
			mpis := "none found"
			if len(v.MPIs) > 0 {
				mpis = strings.Join(v.MPIs, ", ")
			}
			fmt.Fprintf(c.stdout, "MPI: %s\n", mpis)
			return nil
		})
}

func (c *cli) migrateCommand() *cobra.Command {
	var rank int
	var pod, to string
	var asJSON bool
	cmd := command("migrate (--rank R | --pod NAME) --to NODE [--json] JOB", "move one pod of a running job to another node",
		`Move one pod of a running job to NODE, live, and print the downtime the pod
saw. Its progress goes to stderr (see cruz checkpoint).`, [2]int{1, 1},
		func(cmd *cobra.Command, a []string) error {
			req := api.MigrateRequest{Pod: pod, To: to}
			if cmd.Flags().Changed("rank") {
				if rank < 0 {
					return usagef(cmd, "--rank %d: ranks start at 0", rank)
				}
				req.Rank = &rank
			}
			if (req.Rank == nil) == (pod == "") || to == "" {
				return usagef(cmd, "give one of --rank and --pod, and --to")
			}
			ag, err := c.agent()
			if err != nil {
				return err
			}
			req.Progress = true
			view := c.progressView(asJSON)
			f, err := ag.Progressing(c.ctx, "POST", "/v1/jobs/"+url.PathEscape(a[0])+"/migrate", req, view.show)
			view.end()
			if err != nil {
				return err
			}
			if f.Migration == nil {
				return fmt.Errorf("the agent answered no migration")
			}
			m := *f.Migration
			if asJSON {
				return printJSON(c.stdout, m)
			}
			fmt.Fprintf(c.stdout, "%s moved from %s to %s: downtime %d ms (dump %d ms, restore %d ms, %s)%s\n",
				m.Pod, m.From, m.To, m.DowntimeMS, m.DumpMS, m.RestoreMS, humanBytes(m.Bytes), ranksMoved(m.Ranks))
			return nil
		})
	cmd.Flags().IntVar(&rank, "rank", 0, "the rank whose pod moves")
	cmd.Flags().StringVar(&pod, "pod", "", "the pod that moves (instead of --rank), e.g. JOB-mpiexec")
	cmd.Flags().StringVar(&to, "to", "", "the node it moves to")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the migration as JSON, and the progress as JSON lines on stderr")
	return cmd
}

func (c *cli) drainCommand() *cobra.Command {
	var asJSON bool
	cmd := command("drain [--json] NODE", "(root) move every pod off a node", `Move every pod of every job off NODE, live (root only). The progress of
each move goes to stderr (see cruz checkpoint).`, [2]int{1, 1},
		func(_ *cobra.Command, a []string) error {
			ag, err := c.agent()
			if err != nil {
				return err
			}
			view := c.progressView(asJSON)
			f, err := ag.Progressing(c.ctx, "POST", "/v1/drain", api.DrainRequest{Node: a[0], Progress: true}, view.show)
			view.end()
			if err != nil {
				return err
			}
			if f.Drain == nil {
				return fmt.Errorf("the agent answered no drain")
			}
			res := *f.Drain
			if asJSON {
				return printJSON(c.stdout, res)
			}
			for _, m := range res.Migrations {
				fmt.Fprintf(c.stdout, "%s moved from %s to %s: downtime %d ms%s\n", m.Pod, m.From, m.To, m.DowntimeMS, ranksMoved(m.Ranks))
			}
			fmt.Fprintf(c.stdout, "node %s is drained: %d pods moved\n", res.Node, len(res.Migrations))
			return nil
		})
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the migrations as JSON, and the progress as JSON lines on stderr")
	return cmd
}

func (c *cli) slurmEndCommand() *cobra.Command {
	var step int
	var reason string
	cmd := command("slurm-end [--step S] [--reason TEXT] SLURM_JOB_ID", "remove the pods of a Slurm job's steps",
		`Remove the pods of a Slurm job's srun --cruz steps (their checkpoints stay);
the SPANK plugin's epilog runs it on every node.`, [2]int{1, 1},
		func(cmd *cobra.Command, a []string) error {
			id, err := strconv.ParseUint(a[0], 10, 32)
			if err != nil || id == 0 {
				return usagef(cmd, "Slurm job id %q is not a positive number", a[0])
			}
			req := api.SlurmEndRequest{JobID: uint32(id), Reason: reason}
			if cmd.Flags().Changed("step") {
				if step < 0 {
					return usagef(cmd, "--step %d: steps start at 0", step)
				}
				s := uint32(step)
				req.StepID = &s
			}
			ag, err := c.agent()
			if err != nil {
				return err
			}
			res, err := ag.SlurmEnd(c.ctx, req)
			if err != nil {
				return err
			}
			for _, j := range res.Jobs {
				fmt.Fprintf(c.stdout, "ended job %s\n", j)
			}
			for _, p := range res.Pods {
				fmt.Fprintf(c.stdout, "removed pod %s\n", p)
			}
			return nil
		})
	cmd.Flags().IntVar(&step, "step", 0, "only this step of the job")
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the job's event log")
	return cmd
}

// ranksMoved says which ranks moved with a pod that holds several
// (cruz run --ranks-per-pod): "; ranks 2, 3 moved with it".
func ranksMoved(ranks []int) string {
	if len(ranks) < 2 {
		return ""
	}
	words := make([]string, len(ranks))
	for i, r := range ranks {
		words[i] = strconv.Itoa(r)
	}
	return "; ranks " + strings.Join(words, ", ") + " moved with it"
}
