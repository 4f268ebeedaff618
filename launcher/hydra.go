// Package launcher holds what turns a user's MPI command into pods: the
// mpiexec command line for MPICH's hydra in "manual" launch mode, the parsing
// of the proxy launch lines hydra prints, and the client side of `cruz run`
// and `cruz restart` (streaming, signals, exit status).
package launcher

import (
	"bufio"
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
