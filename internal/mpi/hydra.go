// Package mpi owns what turns a user's MPI command into pods: the command
// line of its launcher (mpiexec of MPICH's hydra in "manual" launch mode
// today), and what that launcher prints to say which process each rank's
// pod must run (hydra's proxy launch lines, read by LaunchGate). It knows
// nothing of pods, nodes or CRIU: the agent asks it what to start.
package mpi

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// MpiexecArgv builds the command of a job's mpiexec pod. With "-launcher
// manual", hydra does not start its proxies itself: it prints one launch
// line per host and waits for them to connect, which lets the agent start
// each proxy as PID 1 of its rank's pod. "-iface eth0" makes hydra advertise
// the pod addresses (the pods cannot resolve each other's host names).
func MpiexecArgv(mpiexec string, hosts []string, np int, argv []string) []string {
	out := []string{mpiexec, "-launcher", "manual", "-iface", "eth0",
		"-hosts", strings.Join(hosts, ","), "-n", strconv.Itoa(np)}
	return append(out, argv...)
}

// ProxyLaunch is one hydra proxy to start.
type ProxyLaunch struct {
	ID   int      // --proxy-id: the index of the host it serves
	Argv []string // the proxy command line, run as is
}

const (
	launchPrefix = "HYDRA_LAUNCH: "
	launchEnd    = "HYDRA_LAUNCH_END"
)

// maxLaunchPreamble bounds what ReadLaunches reads before giving up, so a
// misbehaving mpiexec cannot make the agent buffer without end.
const maxLaunchPreamble = 1 << 20

// ReadLaunches reads mpiexec's stdout up to HYDRA_LAUNCH_END and returns the
// proxies to start, in host order. Lines before the first launch line that are
// not launch lines (warnings) are returned in other, so the user sees them.
func ReadLaunches(r *bufio.Reader, hosts int) (launches []ProxyLaunch, other []string, err error) {
	read := 0
	seen := map[int]bool{}
	for {
		line, err := r.ReadString('\n')
		read += len(line)
		if read > maxLaunchPreamble {
			return nil, other, errors.New("mpiexec printed more than 1 MiB before its launch lines end")
		}
		trimmed := strings.TrimRight(line, "\r\n")
		switch {
		case trimmed == launchEnd:
			if len(launches) != hosts {
				return nil, other, fmt.Errorf("mpiexec asked for %d proxies, expected one per pod (%d)", len(launches), hosts)
			}
			return launches, other, nil
		case strings.HasPrefix(trimmed, launchPrefix):
			pl, perr := parseLaunch(strings.TrimPrefix(trimmed, launchPrefix))
			if perr != nil {
				return nil, other, perr
			}
			if pl.ID < 0 || pl.ID >= hosts || seen[pl.ID] {
				return nil, other, fmt.Errorf("mpiexec launch line has proxy id %d, expected a distinct id from 0 to %d", pl.ID, hosts-1)
			}
			seen[pl.ID] = true
			launches = append(launches, pl)
		case trimmed != "":
			other = append(other, trimmed)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, other, errors.New("mpiexec ended before printing its proxy launch lines (see its output above)")
			}
			return nil, other, fmt.Errorf("read mpiexec output: %w", err)
		}
	}
}

func parseLaunch(s string) (ProxyLaunch, error) {
	argv := strings.Fields(s)
	if len(argv) == 0 {
		return ProxyLaunch{}, errors.New("empty HYDRA_LAUNCH line from mpiexec")
	}
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] == "--proxy-id" {
			id, err := strconv.Atoi(argv[i+1])
			if err != nil {
				return ProxyLaunch{}, fmt.Errorf("bad --proxy-id %q in HYDRA_LAUNCH line", argv[i+1])
			}
			return ProxyLaunch{ID: id, Argv: argv}, nil
		}
	}
	return ProxyLaunch{}, fmt.Errorf("HYDRA_LAUNCH line without --proxy-id: %q", s)
}

// LaunchGate sits between mpiexec's stdout and the job's output until hydra
// has printed its proxy launch lines, which it hands to the agent instead
// (Result); everything else mpiexec prints goes on to the job's output.
type LaunchGate struct {
	hosts  int
	output func(data []byte)
	buf    []byte
	done   bool
	result chan LaunchResult
}

// LaunchResult is what a LaunchGate read: the proxies to start, or why
// mpiexec printed none.
type LaunchResult struct {
	Launches []ProxyLaunch
	Err      error
}

// NewLaunchGate gates the stdout of an mpiexec started for hosts pods;
// output gets what is not a launch line.
func NewLaunchGate(hosts int, output func(data []byte)) *LaunchGate {
	return &LaunchGate{hosts: hosts, output: output, result: make(chan LaunchResult, 1)}
}

// Result delivers the launches once, when HYDRA_LAUNCH_END (or the end of
// mpiexec's stdout) has been read.
func (g *LaunchGate) Result() <-chan LaunchResult { return g.result }

var launchEndLine = []byte(launchEnd + "\n")

// Write gets mpiexec's stdout in order (nil at its end). It is called from
// one goroutine at a time.
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
	if i := bytes.Index(g.buf, launchEndLine); i >= 0 {
		g.finish(g.buf[:i+len(launchEndLine)], g.buf[i+len(launchEndLine):])
	} else if len(g.buf) > maxLaunchPreamble {
		g.finish(g.buf, nil)
	}
}

func (g *LaunchGate) finish(head, rest []byte) {
	g.done = true
	launches, other, err := ReadLaunches(bufio.NewReader(bytes.NewReader(head)), g.hosts)
	for _, l := range other {
		g.output([]byte(l + "\n"))
	}
	g.result <- LaunchResult{Launches: launches, Err: err}
	if len(rest) > 0 {
		g.output(append([]byte(nil), rest...))
	}
}
