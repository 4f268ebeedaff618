package proc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrNoSlurmStep: no Slurm step daemon runs above the process.
var ErrNoSlurmStep = errors.New("not a task of a Slurm step")

// SlurmStepOf returns the Slurm step ("JOB.STEP") that pid runs in, read
// from the nearest ancestor that is Slurm's step daemon: a process that runs
// as root the executable slurmstepd, whose title Slurm sets to
// "slurmstepd: [JOB.STEP]". A task's environment (SLURM_JOB_ID and the
// rest) is the user's to set, and so is the name of any process of the
// user's; a root process is not, so this is what tells a task's step.
func SlurmStepOf(pid int) (string, error) {
	for i := 0; i < 64 && pid > 1; i++ {
		st, err := readStatus(pid)
		if err != nil {
			return "", fmt.Errorf("process %d: %w", pid, err)
		}
		if st.uid == 0 && st.euid == 0 && isSlurmstepd(pid) {
			args := Cmdline(pid)
			if len(args) > 0 {
				if step, ok := stepOfTitle(args[0]); ok {
					return step, nil
				}
			}
			return "", fmt.Errorf("slurmstepd %d does not name its step (title %q)", pid, strings.Join(args, " "))
		}
		pid = st.ppid
	}
	return "", ErrNoSlurmStep
}

func isSlurmstepd(pid int) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return err == nil && isSlurmstepdExe(exe)
}

// isSlurmstepdExe: slurmstepd, or a packaged name of it (Debian's
// slurm-wlm installs /usr/sbin/slurmstepd-wlm, slurmstepd being a link to
// it), also after the file was replaced by an upgrade.
func isSlurmstepdExe(exe string) bool {
	b := filepath.Base(strings.TrimSuffix(exe, " (deleted)"))
	return b == "slurmstepd" || strings.HasPrefix(b, "slurmstepd-")
}

// stepOfTitle reads "JOB.STEP" from slurmstepd's title, "slurmstepd: [1.0]"
// (padded after the bracket, as titles overwrite the arguments' space).
func stepOfTitle(title string) (string, bool) {
	s, ok := strings.CutPrefix(strings.TrimRight(title, " \x00"), "slurmstepd: [")
	if !ok || !strings.HasSuffix(s, "]") {
		return "", false
	}
	return strings.TrimSuffix(s, "]"), true
}

type status struct{ ppid, uid, euid int }

func readStatus(pid int) (status, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return status{}, err
	}
	s := status{ppid: -1, uid: -1, euid: -1}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ":")
		f := strings.Fields(v)
		switch {
		case k == "PPid" && len(f) == 1:
			s.ppid, _ = strconv.Atoi(f[0])
		case k == "Uid" && len(f) >= 2:
			s.uid, _ = strconv.Atoi(f[0])
			s.euid, _ = strconv.Atoi(f[1])
		}
	}
	if s.ppid < 0 || s.uid < 0 {
		return s, errors.New("unreadable /proc status")
	}
	return s, nil
}
