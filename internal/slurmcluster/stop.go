//go:build linux

package slurmcluster

import (
	procfs "github.com/cruz-hpc/cruz/internal/proc"

	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// daemon is a live daemon of a cluster (munged, slurmctld, its
// slurmscriptd, slurmd) or one of the stages that become a slurmd (nsenter,
// unshare, sh node-init.sh).
type daemon struct {
	pid  int
	comm string
}

// StopDir stops and removes the cluster whose state directory is dir, as
// Stop does, without the *Cluster that Start returned: for `cruz cluster
// down` after the process that started the cluster is gone. It finds the
// daemons by their pid files and by their command lines (which name files
// in dir), and the job steps by the namespaces of the nodes' slurmds. It
// does nothing if there is neither a process nor a state directory.
func StopDir(ctx context.Context, dir string) error {
	if dir == "" || !filepath.IsAbs(dir) || filepath.Clean(dir) == "/" {
		return fmt.Errorf("state directory %q is not an absolute path below /", dir)
	}
	if os.Geteuid() != 0 {
		return errors.New("stopping a slurm cluster needs root (its daemons run as root)")
	}
	return stopDir(ctx, filepath.Clean(dir), false, io.Discard)
}

// stopDir ends the cluster in dir: first the jobs' processes (SIGTERM, up to
// jobTimeout), then the slurm daemons (SIGTERM, SIGKILL after termTimeout)
// with what is left of the jobs (SIGKILL), then munged, last because the
// others may still talk to it while they shut down. Then it removes the
// state files.
func stopDir(ctx context.Context, dir string, keepLogs bool, log io.Writer) error {
	var errs []error
	ds := findDaemons(dir)
	keys := stepNamespaces(dir, ds)
	var slurm, munge, daemons []int
	for _, d := range ds {
		daemons = append(daemons, d.pid)
		if d.comm == "munged" {
			munge = append(munge, d.pid)
		} else {
			slurm = append(slurm, d.pid)
		}
	}
	// The jobs' processes (tasks, batch scripts, sruns) get SIGTERM first,
	// while the daemons still run: an srun then ends its step through them
	// instead of waiting for daemons that are gone.
	var tasks []int
	for _, pid := range nsMembers(keys) {
		if readComm(pid) != "slurmstepd" && !contains(daemons, pid) {
			tasks = append(tasks, pid)
		}
	}
	if len(tasks) > 0 {
		fmt.Fprintf(log, "stopping jobs: SIGTERM to %v\n", tasks)
		for _, pid := range tasks {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
		awaitGone(ctx, tasks, jobTimeout)
	}
	// slurmstepd ignores SIGTERM (Slurm signals a step through it, never
	// it), and with its slurmd stopping nobody is left to ask it: it gets
	// SIGKILL at once, and so do the job processes still there, which had
	// their SIGTERM.
	var kill []int
	for _, pid := range nsMembers(keys) {
		if readComm(pid) == "slurmstepd" || contains(tasks, pid) {
			kill = append(kill, pid)
		} else {
			slurm = append(slurm, pid)
		}
	}
	if err := terminate(ctx, "slurm daemons and jobs", slurm, kill, log); err != nil {
		errs = append(errs, err)
	}
	// A task may have forked while the others died: sweep once more.
	if left := nsMembers(keys); len(left) > 0 {
		if err := terminate(ctx, "job processes", nil, left, log); err != nil {
			errs = append(errs, err)
		}
	}
	if err := terminate(ctx, "munged", munge, nil, log); err != nil {
		errs = append(errs, err)
	}
	if err := removeCgroups(dir); err != nil {
		errs = append(errs, err)
	}
	if err := removeState(dir, keepLogs); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// terminate sends SIGTERM to term and SIGKILL to kill, waits up to
// termTimeout, then SIGKILLs those left and waits up to killTimeout.
func terminate(ctx context.Context, what string, term, kill []int, log io.Writer) error {
	term, kill = dedupe(term), dedupe(kill)
	if len(term)+len(kill) == 0 {
		return nil
	}
	fmt.Fprintf(log, "stopping %s: SIGTERM to %v, SIGKILL to %v\n", what, term, kill)
	for _, pid := range term {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	for _, pid := range kill {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	left := awaitGone(ctx, append(term, kill...), termTimeout)
	if len(left) == 0 {
		return nil
	}
	fmt.Fprintf(log, "%s %v did not end within %s; killing\n", what, left, termTimeout)
	for _, pid := range left {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// Not bound by ctx: SIGKILL is sent, and this wait is short anyway.
	if left = awaitGone(context.Background(), left, killTimeout); len(left) > 0 {
		return fmt.Errorf("%s %v did not die within %s of SIGKILL", what, left, killTimeout)
	}
	return nil
}

// removeState removes what Start made in dir (never anything else), and dir
// itself if it is then empty.
func removeState(dir string, keepLogs bool) error {
	var errs []error
	for _, name := range stateNames {
		if keepLogs && name == logDirName {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			errs = append(errs, fmt.Errorf("remove state: %w", err))
		}
	}
	if !keepLogs {
		if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
			errs = append(errs, fmt.Errorf("remove state directory: %w", err))
		}
	}
	return errors.Join(errs...)
}

// findDaemons lists the live processes of the cluster in dir: those named
// in its pid files and those found in /proc, both only if their command
// lines name the cluster's files (so a reused pid is never taken for ours).
func findDaemons(dir string) []daemon {
	seen := map[int]bool{}
	var ds []daemon
	add := func(pid int) {
		if seen[pid] {
			return
		}
		seen[pid] = true
		if comm, ok := ownDaemon(dir, pid); ok {
			ds = append(ds, daemon{pid: pid, comm: comm})
		}
	}
	if files, err := filepath.Glob(filepath.Join(dir, pidDirName, "*.pid")); err == nil {
		for _, f := range files {
			b, err := os.ReadFile(f)
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil && pid > 0 {
				add(pid)
			}
		}
	}
	for _, pid := range allPIDs() {
		add(pid)
	}
	return ds
}

// ownDaemon tells whether pid is a live process of the cluster in dir and
// returns its command name. Slurm daemons and the stages that become a
// slurmd name dir's slurm.conf or node-init.sh in their arguments; munged
// names dir's munge socket; slurmctld's slurmscriptd has the SLURM_CONF
// that Start gives every daemon.
func ownDaemon(dir string, pid int) (string, bool) {
	comm := readComm(pid)
	conf, init := filepath.Join(dir, confName), filepath.Join(dir, nodeInitName)
	sock := "--socket=" + filepath.Join(dir, runDirName, mungeSocket)
	switch comm {
	case "slurmctld", "slurmd", "nsenter", "unshare", "sh":
		for _, a := range cmdline(pid) {
			if a == conf || a == init {
				return comm, alive(pid)
			}
		}
	case "munged":
		for _, a := range cmdline(pid) {
			if a == sock {
				return comm, alive(pid)
			}
		}
	case "slurmscriptd":
		// slurmctld's helper renames itself, but keeps its environment.
		for _, e := range environ(pid) {
			if e == "SLURM_CONF="+conf {
				return comm, alive(pid)
			}
		}
	}
	return "", false
}

// stepNamespaces are the "mnt:[..] uts:[..]" keys of the namespaces in which
// the cluster's job steps run: each live slurmd's, and each recorded in
// Dir/pids/*.ns if a live process of this cluster still runs in it. The
// kernel reuses namespace numbers once a namespace is gone, so a recorded key
// alone might name another program's namespaces; a slurmstepd (or slurmd)
// started with this cluster's SLURM_CONF in its environment proves it ours.
func stepNamespaces(dir string, ds []daemon) map[string]bool {
	keys := map[string]bool{}
	self, _ := nsKey(os.Getpid())
	for _, d := range ds {
		if d.comm == "slurmd" {
			if k, err := nsKey(d.pid); err == nil && k != self {
				keys[k] = true
			}
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, pidDirName, "*.ns"))
	recorded := map[string]bool{}
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil {
			if k := strings.TrimSpace(string(b)); k != "" && k != self && !keys[k] {
				recorded[k] = true
			}
		}
	}
	if len(recorded) == 0 {
		return keys
	}
	want := "SLURM_CONF=" + filepath.Join(dir, confName)
	for _, pid := range allPIDs() {
		k, err := nsKey(pid)
		if err != nil || !recorded[k] {
			continue
		}
		for _, e := range environ(pid) {
			if e == want {
				keys[k] = true
				delete(recorded, k)
				break
			}
		}
	}
	return keys
}

// nsMembers lists the live processes whose namespaces are in keys.
func nsMembers(keys map[string]bool) []int {
	if len(keys) == 0 {
		return nil
	}
	var pids []int
	for _, pid := range allPIDs() {
		if k, err := nsKey(pid); err == nil && keys[k] && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// nsKey names pid's mount and UTS namespaces, which every slurmd gets anew
// from unshare and hands down to its job steps.
func nsKey(pid int) (string, error) {
	mnt, err := nsID(pid, "mnt")
	if err != nil {
		return "", err
	}
	uts, err := nsID(pid, "uts")
	if err != nil {
		return "", err
	}
	return mnt + " " + uts, nil
}

// nsID is pid's namespace of the kind ns, as "net:[4026531840]".
func nsID(pid int, ns string) (string, error) {
	return os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
}

func allPIDs() []int {
	ents, _ := os.ReadDir("/proc")
	pids := make([]int, 0, len(ents))
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

func readComm(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func cmdline(pid int) []string { return procfs.Cmdline(pid) }
func environ(pid int) []string { return procfs.Environ(pid) }
func alive(pid int) bool       { return procfs.Alive(pid) }

func awaitGone(ctx context.Context, pids []int, timeout time.Duration) []int {
	return procfs.AwaitGone(ctx, pids, timeout)
}

func contains(pids []int, pid int) bool {
	for _, p := range pids {
		if p == pid {
			return true
		}
	}
	return false
}

func dedupe(pids []int) []int {
	seen := map[int]bool{}
	out := pids[:0:0]
	for _, p := range pids {
		if !seen[p] && p > 0 && p != os.Getpid() {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}
