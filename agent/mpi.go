package agent

import (
	"fmt"
	"os"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/mpi"
)

// The MPIs this agent launches: MPICH through hydra, Open MPI through its
// mpirun with cruzd as remote shell (internal/mpi), as configured in [mpi].

// launcher returns the launcher of the MPI a run asks for ("" is MPICH, as
// asked by clients that predate Open MPI), or why it cannot be used here.
func (a *Agent) launcher(kind string) (mpi.Launcher, error) {
	k, err := mpi.ParseKind(kind)
	if err != nil {
		return nil, api.Errorf(api.ErrInvalid, "--mpi: %v", err)
	}
	var l mpi.Launcher
	switch k {
	case mpi.Auto:
		if kind != "" {
			return nil, api.Errorf(api.ErrInvalid, "--mpi auto is for cruz run, which finds the MPI the program links: send mpich or openmpi")
		}
		fallthrough
	case mpi.MPICH:
		l = mpi.Hydra{Mpiexec: a.cfg.MPI.Mpiexec, Vars: a.cfg.MPI.Env}
	case mpi.OpenMPI:
		self := a.self
		if self == "" {
			if self, err = os.Executable(); err != nil {
				return nil, fmt.Errorf("find cruzd's executable (Open MPI's remote shell): %w", err)
			}
		}
		l = mpi.ORTE{Mpirun: a.cfg.MPI.OpenMPIMpirun, Vars: a.cfg.MPI.OpenMPIEnv, Agent: self}
	}
	return l, nil
}

// checkLauncher refuses a launcher that is not installed on this node,
// where the job's launcher pod runs.
func checkLauncher(l mpi.Launcher) error {
	if _, err := mpi.Installed(l); err != nil {
		key := "mpi.mpiexec"
		if l.Kind() == mpi.OpenMPI {
			key = "mpi.openmpi_mpirun"
		}
		return api.Errorf(api.ErrInvalid, "%v: install it, or set %s in cruzd's configuration", err, key)
	}
	return nil
}

// mpis lists the MPIs whose launchers this node has, for cruz version.
func (a *Agent) mpis() []string {
	var out []string
	for _, k := range mpi.Kinds {
		l, err := a.launcher(string(k))
		if err != nil {
			continue
		}
		if p, err := mpi.Installed(l); err == nil {
			out = append(out, fmt.Sprintf("%s (%s)", k, p))
		}
	}
	return out
}
