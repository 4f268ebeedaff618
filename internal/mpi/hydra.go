package mpi

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Hydra launches MPICH jobs with mpiexec.hydra in "manual" launch mode:
// hydra does not start its proxies itself but prints one launch line per
// host and waits for them to connect, which lets the agent start each proxy
// as PID 1 of its rank's pod.
type Hydra struct {
	Mpiexec string   // mpiexec.hydra, or a path
	Vars    []string // KEY=VALUE for every pod (config mpi.env)
}

func (h Hydra) Kind() Kind       { return MPICH }
func (h Hydra) Command() string  { return h.Mpiexec }
func (h Hydra) PrivateDev() bool { return false }

func (h Hydra) Env(uint32) []string { return append([]string(nil), h.Vars...) }

// Shared drops MPIR_CVAR_NOLOCAL, which makes MPICH treat every rank as
// remote: the ranks of one hydra proxy (one pod) then talk through MPICH's
// own shared memory. UCX stays as configured (UCX_TLS=tcp,self): UCX takes
// every rank on this kernel for local (it compares boot ids) and would try
// its shared-memory transports across pods too.
func (h Hydra) Shared(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, "MPIR_CVAR_NOLOCAL=") {
			out = append(out, kv)
		}
	}
	return out
}

// Argv: "-iface eth0" makes hydra advertise the pod addresses (the pods
// cannot resolve each other's host names).
func (h Hydra) Argv(hosts []string, np int, argv []string) []string {
	out := []string{h.Mpiexec, "-launcher", "manual", "-iface", "eth0",
		"-hosts", strings.Join(hosts, ","), "-n", strconv.Itoa(np)}
	return append(out, argv...)
}

const (
	hydraLaunchPrefix = "HYDRA_LAUNCH: "
	hydraLaunchEnd    = "HYDRA_LAUNCH_END"
)

func (h Hydra) newParser(hosts []string) parser {
	return &hydraParser{hosts: len(hosts), seen: map[int]bool{}}
}

type hydraParser struct {
	hosts    int
	seen     map[int]bool
	launches []ProxyLaunch
}

func (p *hydraParser) line(s string) (bool, error) {
	switch {
	case s == hydraLaunchEnd:
		if len(p.launches) != p.hosts {
			return false, fmt.Errorf("mpiexec asked for %d proxies, expected one per pod (%d)", len(p.launches), p.hosts)
		}
		return true, nil
	case strings.HasPrefix(s, hydraLaunchPrefix):
		pl, err := parseHydraLaunch(strings.TrimPrefix(s, hydraLaunchPrefix))
		if err != nil {
			return false, err
		}
		if pl.ID < 0 || pl.ID >= p.hosts || p.seen[pl.ID] {
			return false, fmt.Errorf("mpiexec launch line has proxy id %d, expected a distinct id from 0 to %d", pl.ID, p.hosts-1)
		}
		p.seen[pl.ID] = true
		p.launches = append(p.launches, pl)
	}
	return false, nil
}

func (p *hydraParser) eof() error {
	return errors.New("mpiexec ended before printing its proxy launch lines (see its output above)")
}

func (p *hydraParser) result() []ProxyLaunch { return p.launches }

func parseHydraLaunch(s string) (ProxyLaunch, error) {
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
