package mpi

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ORTE launches Open MPI jobs with its own mpirun, whose rsh launcher
// runs Cruz's remote-shell agent (RshAgentArg) instead of ssh: the agent
// prints the daemon (orted) command mpirun wants started on a host, and
// the Cruz agent starts that orted as PID 1 of the host's rank pod. orted
// then starts the rank and carries its output and control back to mpirun
// over the pod network.
type ORTE struct {
	Mpirun string   // mpirun.openmpi, or a path
	Vars   []string // KEY=VALUE for every pod (config mpi.openmpi_env)
	Agent  string   // the cruzd executable, run as the remote shell
}

func (o ORTE) Kind() Kind      { return OpenMPI }
func (o ORTE) Command() string { return o.Mpirun }

// PrivateDev: Open MPI keeps its session directory (PMIx sockets, shared
// memory segments) under orte_tmpdir_base, /dev/shm by default in Cruz, and
// orted gives ranks a pseudo-terminal for their output: both must be the
// pod's own, so that CRIU saves them with the pod and restores them on any
// node.
func (o ORTE) PrivateDev() bool { return true }

// Env: mpirun and orted read their settings from OMPI_MCA_ variables; the
// remote shell is Cruz's agent, and every daemon is started directly (no
// tree spawn through other daemons). The rsh launcher and the --host list
// are forced: in an srun --cruz step the pods have the task's SLURM_*
// variables, from which mpirun would otherwise take Slurm's allocation
// (ras slurm: "All nodes which are allocated for this job are already
// filled") and start its daemons with srun (plm slurm), outside the pods.
// Open MPI refuses to run as root unless told, which jobs of root are.
func (o ORTE) Env(uid uint32) []string {
	env := append([]string(nil), o.Vars...)
	env = append(env, "OMPI_MCA_plm_rsh_agent="+o.Agent+" "+RshAgentArg, "OMPI_MCA_plm_rsh_no_tree_spawn=1",
		"OMPI_MCA_plm=rsh", "OMPI_MCA_ras=^slurm")
	if uid == 0 {
		env = append(env, "OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
	}
	return env
}

// Shared adds the shared-memory BTL (vader) to a BTL list that lacks it.
// Open MPI uses it only between ranks of one orted, that is of one pod: its
// segments are files of the pod's session directory (in its own /dev/shm)
// and move with it.
func (o ORTE) Shared(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "OMPI_MCA_btl="); ok && !strings.HasPrefix(v, "^") &&
			!strings.Contains(v, "vader") && !strings.Contains(v, "sm") {
			kv = "OMPI_MCA_btl=vader," + v
		}
		out = append(out, kv)
	}
	return out
}

// Argv: one slot per host address ("ADDR:N": N slots, a pod of N ranks),
// no rank on mpirun's own pod.
func (o ORTE) Argv(hosts []string, np int, argv []string) []string {
	out := []string{o.Mpirun, "--host", strings.Join(hosts, ","), "-np", strconv.Itoa(np)}
	return append(out, argv...)
}

// RshAgentArg is the hidden first argument that makes cruzd act as Open
// MPI's remote shell (RshAgent).
const RshAgentArg = "__cruz-rsh-agent"

// IsRshAgent tells main whether cruzd was started as Open MPI's remote shell.
func IsRshAgent(args []string) bool { return len(args) > 1 && args[1] == RshAgentArg }

const ortedLaunchPrefix = "CRUZ_ORTED_LAUNCH: "

// ortedLaunch is what the remote-shell agent prints for one host.
type ortedLaunch struct {
	Host    string `json:"host"`
	Command string `json:"command"`
}

// RshAgent runs as mpirun's remote shell (args: cruzd __cruz-rsh-agent
// HOST COMMAND...), in mpirun's pod as the job's user: it prints the
// command on mpirun's stdout, where the Cruz agent's launch gate reads it,
// and returns 0 at once, as ssh would for a daemon that went to the
// background. It returns the exit status.
func RshAgent(args []string) int {
	rest := args[2:]
	for len(rest) > 0 && strings.HasPrefix(rest[0], "-") { // ssh options, if any
		rest = rest[1:]
	}
	if len(rest) < 2 {
		fmt.Fprintln(os.Stderr, "cruzd "+RshAgentArg+": usage: HOST COMMAND... (this is Open MPI's remote shell inside a Cruz job)")
		return 255
	}
	b, err := json.Marshal(ortedLaunch{Host: rest[0], Command: strings.TrimSpace(strings.Join(rest[1:], " "))})
	if err != nil {
		fmt.Fprintln(os.Stderr, "cruzd "+RshAgentArg+":", err)
		return 255
	}
	if _, err := os.Stdout.Write(append([]byte(ortedLaunchPrefix), append(b, '\n')...)); err != nil {
		fmt.Fprintln(os.Stderr, "cruzd "+RshAgentArg+":", err)
		return 255
	}
	return 0
}

func (o ORTE) newParser(hosts []string) parser {
	idx := make(map[string]int, len(hosts))
	for i, h := range hosts {
		idx[h] = i
	}
	return &ortedParser{hosts: idx, n: len(hosts), seen: map[int]bool{}}
}

type ortedParser struct {
	hosts    map[string]int
	n        int
	seen     map[int]bool
	launches []ProxyLaunch
}

func (p *ortedParser) line(s string) (bool, error) {
	rest, ok := strings.CutPrefix(s, ortedLaunchPrefix)
	if !ok {
		return false, nil
	}
	var l ortedLaunch
	if err := json.Unmarshal([]byte(rest), &l); err != nil {
		return false, fmt.Errorf("bad daemon launch line from mpirun's remote shell: %w", err)
	}
	id, ok := p.hosts[l.Host]
	if !ok || p.seen[id] {
		return false, fmt.Errorf("mpirun asked for a daemon on %q, expected one on each of the job's pods", l.Host)
	}
	argv, err := ortedArgv(l.Command)
	if err != nil {
		return false, err
	}
	p.seen[id] = true
	p.launches = append(p.launches, ProxyLaunch{ID: id, Argv: argv})
	return len(p.launches) == p.n, nil
}

func (p *ortedParser) eof() error {
	return fmt.Errorf("mpirun ended after asking for %d of %d daemons (see its output above)", len(p.launches), p.n)
}

func (p *ortedParser) result() []ProxyLaunch { return p.launches }

// ortedArgv turns the command mpirun meant for a remote shell into the
// argv of the pod's PID 1: its shell words, without --daemonize (the daemon
// must stay the pod's PID 1). A command that needs a shell (mpirun's
// --prefix sets PATH first) runs under /bin/sh.
func ortedArgv(cmd string) ([]string, error) {
	words, plain, err := shellWords(cmd)
	if err != nil {
		return nil, err
	}
	if len(words) == 0 {
		return nil, errors.New("empty daemon command from mpirun's remote shell")
	}
	if !plain || strings.Contains(words[0], "=") {
		return []string{"/bin/sh", "-c", strings.Replace(cmd, " --daemonize", "", 1)}, nil
	}
	out := words[:0]
	for _, w := range words {
		if w != "--daemonize" {
			out = append(out, w)
		}
	}
	return out, nil
}

// shellWords splits a simple shell command into its words (quotes and
// backslashes as sh reads them); plain is false if it has any operator or
// expansion that only a shell can run.
func shellWords(s string) (words []string, plain bool, err error) {
	var cur strings.Builder
	in := false // inside a word
	plain = true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, false, fmt.Errorf("unterminated quote in daemon command %q", s)
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			in = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
					i++
				} else if s[i] == '$' || s[i] == '`' {
					plain = false
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, false, fmt.Errorf("unterminated quote in daemon command %q", s)
			}
			in = true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			in = true
		default:
			if strings.IndexByte(";&|<>()$`*?[]#~", c) >= 0 {
				plain = false
			}
			cur.WriteByte(c)
			in = true
		}
	}
	if in {
		words = append(words, cur.String())
	}
	return words, plain, nil
}
