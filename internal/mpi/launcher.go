// Package mpi owns what turns a user's MPI command into pods: which MPI a
// program links (Detect), the command line of that MPI's launcher (MPICH's
// mpiexec.hydra in "manual" launch mode, or Open MPI's mpirun with Cruz as
// its remote shell), and what that launcher prints to say which process
// each rank's pod must run (read by LaunchGate). It knows nothing of pods,
// nodes or CRIU: the agent asks it what to start.
package mpi

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os/exec"
)

// Launcher is one MPI's way of starting a job: a launcher process in the
// job's first pod, which names the process (hydra proxy, Open MPI daemon)
// that each rank pod must run as its PID 1.
type Launcher interface {
	// Kind is the MPI this launcher starts.
	Kind() Kind
	// Command is the launcher program (a name looked up in PATH or a path).
	Command() string
	// Argv is the command of the launcher's pod for np ranks, one pod per
	// host address in hosts, running argv. A host may be "ADDR:N", a pod
	// of N ranks (both MPIs read that as N slots).
	Argv(hosts []string, np int, argv []string) []string
	// Env is what the launcher adds to the environment of every pod of a
	// job run as uid.
	Env(uid uint32) []string
	// PrivateDev says whether the job's pods need their own /dev/shm and
	// /dev/pts, which then move with them.
	PrivateDev() bool
	// Shared turns Env into the environment of a job whose pods hold
	// several ranks each (cruz run --ranks-per-pod): the MPI may then use
	// shared memory between the ranks of a pod, and still only TCP between
	// pods. Such pods always get their own /dev/shm.
	Shared(env []string) []string
	// newParser reads the launcher's stdout preamble for a job on hosts.
	newParser(hosts []string) parser
}

// parser reads a launcher's stdout line by line until it has said what
// each rank pod runs.
type parser interface {
	// line takes one line (without its newline); done once every rank
	// pod's process is known.
	line(s string) (done bool, err error)
	// eof is the error for a stdout that ended before done.
	eof() error
	result() []ProxyLaunch
}

// ProxyLaunch is the process one rank pod runs as its PID 1.
type ProxyLaunch struct {
	ID   int      // the index of the pod's host
	Argv []string // the command line, run as is
}

// Installed says whether the launcher's program can be found (with the
// agent's PATH), and where; the error says what is missing.
func Installed(l Launcher) (string, error) {
	p, err := exec.LookPath(l.Command())
	if err != nil {
		return "", fmt.Errorf("%s's launcher %s is not installed on this node (%w)", l.Kind().Name(), l.Command(), err)
	}
	return p, nil
}

// maxLaunchPreamble bounds what is read before giving up, so a misbehaving
// launcher cannot make the agent buffer without end.
const maxLaunchPreamble = 1 << 20

// ReadLaunches reads a launcher's stdout until it has named every rank
// pod's process and returns those, in host order. Lines before that which
// are not launch lines (warnings) are returned in other, so the user sees
// them.
func ReadLaunches(l Launcher, r *bufio.Reader, hosts []string) (launches []ProxyLaunch, other []string, err error) {
	p := l.newParser(hosts)
	read := 0
	for {
		line, rerr := r.ReadString('\n')
		read += len(line)
		if read > maxLaunchPreamble {
			return nil, other, fmt.Errorf("%s printed more than 1 MiB before its launch lines end", l.Command())
		}
		trimmed := trimEOL(line)
		if line != "" {
			done, err := p.line(trimmed)
			if err != nil {
				return nil, other, err
			}
			if done {
				return p.result(), other, nil
			}
			if !isLaunchLine(trimmed) && trimmed != "" {
				other = append(other, trimmed)
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return nil, other, p.eof()
			}
			return nil, other, fmt.Errorf("read %s output: %w", l.Command(), rerr)
		}
	}
}

func trimEOL(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}

func isLaunchLine(s string) bool {
	return bytes.HasPrefix([]byte(s), []byte(hydraLaunchPrefix)) || s == hydraLaunchEnd ||
		bytes.HasPrefix([]byte(s), []byte(ortedLaunchPrefix))
}

// LaunchGate sits between the launcher's stdout and the job's output until
// the launcher has named every rank pod's process, which it hands to the
// agent instead (Result); everything else goes on to the job's output.
type LaunchGate struct {
	l      Launcher
	hosts  []string
	output func(data []byte)
	buf    []byte
	done   bool
	result chan LaunchResult
}

// LaunchResult is what a LaunchGate read: the processes to start, or why
// the launcher named none.
type LaunchResult struct {
	Launches []ProxyLaunch
	Err      error
}

// NewLaunchGate gates the stdout of l started for pods on hosts; output
// gets what is not a launch line.
func NewLaunchGate(l Launcher, hosts []string, output func(data []byte)) *LaunchGate {
	return &LaunchGate{l: l, hosts: hosts, output: output, result: make(chan LaunchResult, 1)}
}

// Result delivers the launches once, when the last one (or the end of the
// launcher's stdout) has been read.
func (g *LaunchGate) Result() <-chan LaunchResult { return g.result }

// Write gets the launcher's stdout in order (nil at its end). It is called
// from one goroutine at a time.
func (g *LaunchGate) Write(data []byte) {
	if g.done {
		if data != nil {
			g.output(data)
		}
		return
	}
	if data == nil {
		g.finish(g.buf, nil)
		return
	}
	g.buf = append(g.buf, data...)
	// Parse the complete lines so far: done as soon as the last launch
	// line is in.
	p := g.l.newParser(g.hosts)
	off := 0
	for {
		i := bytes.IndexByte(g.buf[off:], '\n')
		if i < 0 {
			break
		}
		line := trimEOL(string(g.buf[off : off+i]))
		off += i + 1
		done, err := p.line(line)
		if err != nil || done {
			g.finish(g.buf[:off], g.buf[off:])
			return
		}
	}
	if len(g.buf) > maxLaunchPreamble {
		g.finish(g.buf, nil)
	}
}

func (g *LaunchGate) finish(head, rest []byte) {
	g.done = true
	launches, other, err := ReadLaunches(g.l, bufio.NewReader(bytes.NewReader(head)), g.hosts)
	for _, l := range other {
		g.output([]byte(l + "\n"))
	}
	g.result <- LaunchResult{Launches: launches, Err: err}
	if len(rest) > 0 {
		g.output(append([]byte(nil), rest...))
	}
}
