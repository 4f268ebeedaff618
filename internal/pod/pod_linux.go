// Package pod owns a node's pods. A pod is one rank's (or mpiexec's)
// isolated host: a network namespace with its own address and MAC on the
// node's pod bridge, plus new pid, uts, ipc and mount namespaces for its
// process tree. PID 1 of the pod is the user's command itself (run as the
// user, as a session leader), so the tree that CRIU dumps is exactly the
// application's. The package also owns the packet filter that holds a pod's
// traffic, the gratuitous ARP that announces it after a move, the push of
// its TCP data after a release, the pod's init (the agent binary re-run as
// PID 1), and taking back the pods a dead agent left. It runs CRIU through
// internal/criu and knows nothing of jobs, coordinators or the store.
package pod

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/cgroups"
	"github.com/cruz-hpc/cruz/internal/criu"
	"github.com/cruz-hpc/cruz/internal/proc"

	"golang.org/x/sys/unix"
)

// Spec is what a pod is made from; it is also what a checkpoint keeps.
type Spec = api.PodSpec

// Pod is a live pod on this node.
type Pod struct {
	Spec   Spec
	PID    int // the pod's PID 1, as the node sees it
	ns     *podNetns
	nsPath string // ns.path()
	// pipes maps "pipe:[INODE]" of the pipes the pod writes its stdout
	// and stderr to; a restore swaps in new pipes under the same keys.
	pipes   map[string]string // key -> stream name
	readers sync.WaitGroup    // output copiers; done when the pod's pipes are drained
	exited  chan struct{}     // closed when PID 1 has been reaped
	status  unix.WaitStatus
	// statusUnknown: the pod was taken back from a previous agent, so
	// PID 1 is not this agent's child and its exit status is unknown.
	statusUnknown bool
	// pidfd is PID 1's, through which every signal to it goes (see
	// pidfd_linux.go); nil before PID 1 exists and once the pod is gone.
	pidfd   *os.File
	pidfdMu sync.Mutex
	// initStart is PID 1's start time (see InitID), 0 if unknown.
	initStart uint64
}

// ExitCode turns PID 1's wait status into a shell-style exit code.
func (p *Pod) ExitCode() int {
	switch {
	case p.statusUnknown:
		return -1
	case p.status.Exited():
		return p.status.ExitStatus()
	case p.status.Signaled():
		return 128 + int(p.status.Signal())
	}
	return -1
}

// Sink receives what a pod writes on its stdout and stderr, in order,
// from one goroutine per stream; data is nil once the stream has ended.
type Sink func(stream string, data []byte)

// Host makes and removes pods on this node.
type Host struct {
	Bridge string      // the node's pod bridge
	MTU    int         // of the pods' links
	CRIU   criu.Runner // dumps and restores pods
	Self   string      // this executable, re-run as the pod's init
	Log    *slog.Logger
	// MaxFileBytes bounds the contents of the files a pod writes in place
	// that its checkpoint keeps (store.max_file_bytes; see SaveFiles).
	MaxFileBytes int64
}

// setupNet makes the pod's netns and link. With blocked, the Cruz filter is
// installed before the link comes up, so that a pod restored there never
// answers its peers' retransmissions with resets while it is being restored.
func (h *Host) setupNet(ctx context.Context, spec Spec, blocked bool) (ns *podNetns, err error) {
	ns, err = newPodNetns()
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = deleteHostVeth(spec.Name)
			ns.close()
		}
	}()
	if blocked {
		if err := Block(ctx, ns.path()); err != nil {
			return nil, err
		}
	}
	if err := BoundRetransmits(ns.path()); err != nil {
		rtoWarn.Do(func() {
			h.warn("cannot bound the pods' TCP retransmission backoff (net.ipv4.tcp_rto_max_ms needs Linux 6.15): traffic may take up to 2 minutes to resume after a checkpoint's hold", "err", err)
		})
	}
	if err := attachPod(podLink{Pod: spec.Name, NsPath: ns.path(), Bridge: h.Bridge, Addr: spec.Addr, MTU: h.MTU}); err != nil {
		return nil, err
	}
	return ns, nil
}

// podInitEnv carries the pod init's instructions from the agent to the
// re-executed agent binary that becomes the pod's PID 1.
const podInitEnv = "CRUZ_POD_INIT"

// start makes a new pod and starts spec.Argv as its PID 1.
func (h *Host) Start(ctx context.Context, spec Spec, sink Sink) (_ *Pod, err error) {
	p, outW, errW, err := h.newPod(ctx, spec, false, sink)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			h.Destroy(p)
		}
	}()
	defer outW.Close()
	defer errW.Close()
	initSpec, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("encode pod init: %w", err)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	cmd := exec.Command(h.Self, podInitArg)
	cmd.Env = []string{podInitEnv + "=" + string(initSpec)}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, outW, errW
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWNS,
		// CRIU needs the pod's PID 1 to lead its own session.
		Setsid: true,
	}
	if err := withNetns(p.nsPath, func() error { return startCmd(cmd) }); err != nil {
		return nil, fmt.Errorf("start pod %s: %w", spec.Name, err)
	}
	p.noteInit(cmd.Process.Pid)
	p.exited = make(chan struct{})
	// PID 1 is this agent's child, not reaped before the Wait below: its
	// PID cannot have been reused yet.
	if f, err := openPidfd(p.PID, 0); err == nil {
		p.setPidfd(f)
	}
	go func() {
		_ = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
			p.status = unix.WaitStatus(ws)
		}
		close(p.exited)
	}()
	return p, nil
}

// restore makes a new pod with the address of the checkpointed one and
// restores its process tree from imagesDir. pipes are the dump-time pipe keys
// ("pipe:[INODE]" -> stream). The pod's traffic stays blocked: the caller
// unblocks all pods of a job together, once every one is restored.
func (h *Host) Restore(ctx context.Context, spec Spec, imagesDir, workDir string, pipes map[string]string, sink Sink, timeout time.Duration) (_ *Pod, err error) {
	// CRIU restores as root and gives each task the credentials its image
	// records: those must be the owner's, checked before anything is made.
	if err := CheckImageCreds(imagesDir, spec); err != nil {
		return nil, err
	}
	// CRIU opens the pod's files by path, as root: each must be one its
	// owner may open the same way. This early check gives a clear refusal
	// before anything is made; the one that closes the race with a user
	// who swaps a path while CRIU runs is CheckRestoredFiles, below.
	if err := CheckImageFiles(imagesDir, spec); err != nil {
		return nil, err
	}
	// The files the job wrote go back to what they were at the checkpoint,
	// which CRIU checks and the job expects.
	if err := RestoreFiles(imagesDir, spec); err != nil {
		return nil, err
	}
	p, outW, errW, err := h.newPod(ctx, spec, true, sink)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			h.Destroy(p)
		}
	}()
	defer outW.Close()
	defer errW.Close()
	replace := map[string]*os.File{}
	for key, stream := range pipes {
		switch stream {
		case "stdout":
			replace[key] = outW
		case "stderr":
			replace[key] = errW
		default:
			return nil, fmt.Errorf("pod %s: unknown stream %q in checkpoint", spec.Name, stream)
		}
	}
	// The restored processes go into the Slurm step's cgroups on this
	// node (Cgroups), whichever cgroups they were dumped in.
	pid, err := h.CRIU.Restore(ctx, criu.RestoreOptions{ImagesDir: imagesDir, WorkDir: workDir, NetnsPath: p.nsPath, Pipes: replace, Timeout: timeout,
		Cgroups: spec.Cgroups,
		// Once every process is restored and before any runs: what they
		// hold must be files the owner may use that way, whatever path
		// CRIU opened (issue 11.1).
		PostRestore: func(root int) error {
			start := time.Now()
			err := CheckRestoredFiles(root, spec, workDir)
			if h.Log != nil {
				h.Log.Debug("restored pod's files checked", "pod", spec.Name, "took", time.Since(start), "err", err)
			}
			return err
		}})
	if err != nil {
		return nil, fmt.Errorf("restore pod %s: %w", spec.Name, err)
	}
	p.noteInit(pid)
	p.exited = make(chan struct{})
	// The restored PID 1 is this agent's child, reaped only below.
	if f, err := openPidfd(pid, 0); err == nil {
		p.setPidfd(f)
	}
	go func() {
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(pid, &ws, 0, nil)
			if !errors.Is(err, unix.EINTR) {
				break
			}
		}
		p.status = ws
		close(p.exited)
	}()
	return p, nil
}

// newPod makes a pod's network (blocked or not) and its stdout and stderr
// pipes, whose read ends copy to sink; the caller starts or restores its
// processes with the write ends and closes them.
func (h *Host) newPod(ctx context.Context, spec Spec, blocked bool, sink Sink) (p *Pod, outW, errW *os.File, err error) {
	ns, err := h.setupNet(ctx, spec, blocked)
	if err != nil {
		return nil, nil, nil, err
	}
	p = &Pod{Spec: spec, ns: ns, nsPath: ns.path(), exited: closedChan(), pipes: map[string]string{}}
	if outW, errW, err = h.openPipes(p, sink); err != nil {
		h.Destroy(p)
		return nil, nil, nil, err
	}
	return p, outW, errW, nil
}

// openPipes makes the pod's stdout and stderr pipes, starts copying their
// read ends to sink, and returns the write ends for the pod.
func (h *Host) openPipes(p *Pod, sink Sink) (outW, errW *os.File, err error) {
	var files []*os.File
	for _, stream := range []string{"stdout", "stderr"} {
		r, w, err := os.Pipe()
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, nil, fmt.Errorf("pod %s %s pipe: %w", p.Spec.Name, stream, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(r.Fd()), &st); err != nil {
			r.Close()
			w.Close()
			return nil, nil, fmt.Errorf("stat pipe: %w", err)
		}
		p.copyPipe(fmt.Sprintf("pipe:[%d]", st.Ino), stream, r, sink)
		files = append(files, w)
	}
	return files[0], files[1], nil
}

// copyPipe records the pipe under key and copies what the pod writes to it
// to sink until its end, then closes r.
func (p *Pod) copyPipe(key, stream string, r *os.File, sink Sink) {
	p.pipes[key] = stream
	p.readers.Add(1)
	go func() {
		defer p.readers.Done()
		defer r.Close()
		copyOutput(r, stream, sink)
	}()
}

func copyOutput(r io.Reader, stream string, sink Sink) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			sink(stream, append([]byte(nil), buf[:n]...))
		}
		if err != nil {
			sink(stream, nil)
			return
		}
	}
}

// Signal sends sig to the pod's PID 1 (through its pidfd).
func (p *Pod) Signal(sig syscall.Signal) error {
	if err := p.signal(sig); err != nil {
		return fmt.Errorf("signal pod %s: %w", p.Spec.Name, err)
	}
	return nil
}

// ResumeStopped sends SIGCONT to every process of the pod, undoing a dump
// that left it stopped.
func (p *Pod) ResumeStopped() {
	for _, pid := range ProcessesInNetns(p.ns.ino) {
		signalInNetns(pid, p.ns.ino, unix.SIGCONT)
	}
}

// ContinueStopped sends SIGCONT to the pod's processes that are stopped
// (state T, not a tracer's stop).
func (p *Pod) ContinueStopped() {
	for _, pid := range ProcessesInNetns(p.ns.ino) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) && s[i+2] == 'T' {
			signalInNetns(pid, p.ns.ino, unix.SIGCONT)
		}
	}
}

// destroy kills what is left of the pod and removes every trace of it: its
// processes (killing PID 1 kills its pid namespace), veth and netns (and with
// it the pod's filter table). Safe to call more than once.
func (h *Host) Destroy(p *Pod) {
	if p.PID > 0 {
		_ = p.signal(unix.SIGKILL)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
		}
	}
	p.closePidfd()
	// Processes that sit in the netns without being in the pod's pid
	// namespace (a CRIU restore that failed half-way) go too.
	if p.ns != nil {
		killNetns(p.ns.ino)
	}
	_ = deleteHostVeth(p.Spec.Name)
	p.ns.close()
	p.readers.Wait()
}

// killNetns kills every process in the network namespace with inode ino.
// Only while the caller holds that namespace open: an inode is reused once
// its namespace is freed, and then names another namespace (the node's own
// is one), whose processes this would kill.
func killNetns(ino uint64) {
	for _, pid := range ProcessesInNetns(ino) {
		signalInNetns(pid, ino, unix.SIGKILL)
	}
}

// podInitArg is the hidden first argument that makes the agent binary act as
// a pod's init (see PodInit).
const podInitArg = "__cruz-pod-init"

// IsInit tells main whether this process was started as a pod init.
func IsInit(args []string) bool { return len(args) > 1 && args[1] == podInitArg }

// PodInit runs in a new pod as root, just born in the pod's namespaces: it
// sets the hostname, becomes the user and execs the user's command, which
// thus becomes the pod's PID 1. It only returns on failure, with the exit
// status to use; the reason goes to the pod's stderr, which the user sees.
func Init() int {
	var spec Spec
	if err := json.Unmarshal([]byte(os.Getenv(podInitEnv)), &spec); err != nil {
		fmt.Fprintf(os.Stderr, "cruz: pod init: bad instructions: %v\n", err)
		return 127
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "cruz: pod %s: "+format+"\n", append([]any{spec.Name}, a...)...)
		return code
	}
	if len(spec.Argv) == 0 {
		return fail(127, "no command to run")
	}
	// Into the Slurm step's cgroups first, while still root: everything
	// the pod runs is then born under the step's limits.
	if err := cgroups.Join(spec.Cgroups); err != nil {
		return fail(127, "%v", err)
	}
	// The pod sees the node's filesystems, as slaves: mounts made on the
	// node still reach it, and nothing it mounts leaks out. Its own /proc
	// belongs to its pid namespace, which CRIU's parasite needs to dump a
	// process that is not root.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fail(127, "make mounts private to the pod: %v", err)
	}
	for _, m := range nsfsMounts() {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fail(127, "hide %s from the pod: %v", m, err)
		}
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fail(127, "mount the pod's /proc: %v", err)
	}
	if spec.PrivateDev {
		if err := privateDev(); err != nil {
			return fail(127, "%v", err)
		}
	}
	// stdin was opened in the node's mount namespace; CRIU can only dump
	// files whose mount it finds in the pod's, so open /dev/null again here.
	if err := reopenStdin(); err != nil {
		return fail(127, "open /dev/null: %v", err)
	}
	if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
		return fail(127, "set hostname: %v", err)
	}
	// The agent runs at a raised priority (agent.nice), which its children
	// inherit: the job must not.
	if err := proc.SetNice(0); err != nil {
		return fail(127, "reset the priority: %v", err)
	}
	groups := make([]int, len(spec.Groups))
	for i, g := range spec.Groups {
		groups[i] = int(g)
	}
	if err := syscall.Setgroups(groups); err != nil {
		return fail(127, "set groups: %v", err)
	}
	if err := syscall.Setgid(int(spec.GID)); err != nil {
		return fail(127, "set gid %d: %v", spec.GID, err)
	}
	if err := syscall.Setuid(int(spec.UID)); err != nil {
		return fail(127, "set uid %d: %v", spec.UID, err)
	}
	// no_new_privs: nothing the job execs gains privilege (setuid and
	// setgid bits, file capabilities are ignored), so no process of the
	// pod can ever hold other credentials than its owner's, and none can
	// be dumped with them. It is inherited by every descendant and kept
	// across a restore (internal/criu sets it on the restoring CRIU too).
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fail(127, "set no_new_privs: %v", err)
	}
	if spec.Dir != "" {
		if err := os.Chdir(spec.Dir); err != nil {
			return fail(126, "cannot use working directory %s as uid %d: %v", spec.Dir, spec.UID, err)
		}
	}
	path, err := lookPath(spec.Argv[0], spec.Env)
	if err != nil {
		return fail(127, "%v", err)
	}
	// Only stdin, stdout and stderr go to the pod: a descriptor inherited
	// from whatever started the agent would be dumped with the pod, and
	// CRIU cannot restore files from outside the pod's mount namespace.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fail(127, "close inherited descriptors: %v", err)
	}
	err = syscall.Exec(path, spec.Argv, spec.Env)
	return fail(126, "exec %s: %v", path, err)
}

// privateDev gives the pod its own /dev/shm and /dev/pts (with /dev/ptmx
// leading to it): mounts of the pod's mount namespace, so that CRIU saves
// what is in them (shared memory files, session files, terminals) with the
// pod and makes them again wherever the pod is restored.
func privateDev() error {
	if err := unix.Mount("tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		return fmt.Errorf("mount the pod's /dev/shm: %w", err)
	}
	if err := unix.Mount("devpts", "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"); err != nil {
		return fmt.Errorf("mount the pod's /dev/pts: %w", err)
	}
	if err := unix.Mount("/dev/pts/ptmx", "/dev/ptmx", "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind the pod's /dev/ptmx: %w", err)
	}
	return nil
}

// nsDirs are the directories iproute2 keeps namespace names in. `ip netns
// add` bind-mounts such a directory onto itself and makes it shared, and the
// mount stays after the last name is gone: in a pod it is a shared bind
// mount of a subdirectory that CRIU cannot restore ("Failed to copy sharing
// from ... /run/netns"), so pods do without it.
// rtoWarn says once per agent that the kernel cannot bound the backoff.
var rtoWarn sync.Once

var nsDirs = map[string]bool{"/run/netns": true, "/var/run/netns": true}

// nsfsMounts lists the namespace bind mounts (other agents' pod netns,
// `ip netns` names) in this mount namespace, and iproute2's namespace
// directories (nsDirs), deepest first. A pod must not hold them: they would
// keep those namespaces alive and be dumped with it.
func nsfsMounts() []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		// id parent major:minor root mountpoint options... - fstype source super
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if ok && len(f) > 4 && len(g) > 0 && (g[0] == "nsfs" || nsDirs[f[4]]) {
			out = append([]string{f[4]}, out...)
		}
	}
	return out
}

func reopenStdin() error {
	fd, err := unix.Open("/dev/null", unix.O_RDONLY, 0)
	if err != nil {
		return err
	}
	if fd != 0 {
		defer unix.Close(fd)
		return unix.Dup3(fd, 0, 0)
	}
	return nil
}

// lookPath finds a command as a shell with env's PATH would.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := "/usr/local/bin:/usr/bin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && unix.Access(p, unix.X_OK) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("command %q not found in PATH %s", name, path)
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// Exited is closed once the pod's PID 1 has ended (ExitCode then says how).
func (p *Pod) Exited() <-chan struct{} { return p.exited }

// NetnsPath names the pod's network namespace for code that wants a path.
func (p *Pod) NetnsPath() string { return p.nsPath }

// NetnsInode identifies the pod's network namespace.
func (p *Pod) NetnsInode() uint64 { return p.ns.ino }

// Pipes maps the identity ("pipe:[INODE]") of each pipe the pod writes its
// output to, to its stream ("stdout" or "stderr"): a checkpoint keeps it, so
// that a restore can swap new pipes in.
func (p *Pod) Pipes() map[string]string {
	out := make(map[string]string, len(p.pipes))
	for k, v := range p.pipes {
		out[k] = v
	}
	return out
}

// DumpOptions says where a pod's dump goes.
type DumpOptions struct {
	ImagesDir   string // exists, empty
	WorkDir     string // CRIU's log goes here
	KeepRunning bool   // resume the pod after the dump; else leave it stopped
	Timeout     time.Duration
	// Warn hears what the checkpoint could not keep whole (a file over
	// MaxFileBytes).
	Warn func(string)
}

// Dump checkpoints the pod's process tree with CRIU, as the pod's user. A
// pod holding a process with other credentials than its owner's is refused
// before CRIU runs (CheckCreds), and the images CRIU wrote are checked the
// way a restore checks them, so that a checkpoint that would be refused at
// restore is never committed.
func (h *Host) Dump(ctx context.Context, p *Pod, o DumpOptions) (time.Duration, error) {
	if err := h.awaitStarted(ctx, p); err != nil {
		return 0, err
	}
	if err := p.CheckCreds(); err != nil {
		return 0, err
	}
	warn := o.Warn
	if warn == nil {
		warn = func(msg string) { h.warn(msg) }
	}
	st, err := h.CRIU.Dump(ctx, criu.DumpOptions{Pid: p.PID, ImagesDir: o.ImagesDir, WorkDir: o.WorkDir,
		NetnsInode: p.ns.ino, KeepRunning: o.KeepRunning, UID: p.Spec.UID, GID: p.Spec.GID, Timeout: o.Timeout,
		// While CRIU holds the processes frozen, the files they write
		// agree with the images: save what puts them back.
		PostDump: func() error { return SaveFiles(o.ImagesDir, p.Spec, h.MaxFileBytes, warn) }})
	if err != nil {
		return st.Duration, err
	}
	if err := CheckImageCreds(o.ImagesDir, p.Spec); err != nil {
		return st.Duration, err
	}
	return st.Duration, nil
}

// Block holds the pod's traffic (the Cruz filter).
func (h *Host) Block(ctx context.Context, p *Pod) error { return Block(ctx, p.nsPath) }

// UnblockInput lets what reaches the pod through; Unblock then the rest.
func (h *Host) UnblockInput(ctx context.Context, p *Pod) error { return UnblockInput(ctx, p.nsPath) }

// BlockOutput holds what the pod sends; Block then holds the rest.
func (h *Host) BlockOutput(ctx context.Context, p *Pod) error { return BlockOutput(ctx, p.nsPath) }

// Unblock lets the pod's traffic flow again and pushes what its TCP sockets
// tried to send while it was held, so the job goes on at once instead of
// when the kernel's backed-off timers fire.
func (h *Host) Unblock(ctx context.Context, p *Pod) error {
	if err := Unblock(ctx, p.nsPath); err != nil {
		return err
	}
	PushPendingTCP(p.ns.ino)
	return nil
}

// Release lets a restored (or migrated) pod's traffic flow, tells the LAN
// where its address now lives, and pushes the data its TCP sockets hold.
// A failed announcement is not fatal: the pod's own traffic teaches the
// LAN soon after.
func (h *Host) Release(ctx context.Context, p *Pod) error {
	if err := Unblock(ctx, p.nsPath); err != nil {
		return err
	}
	if err := Announce(p.nsPath, p.Spec.Addr.Addr()); err != nil {
		h.warn("gratuitous ARP", "pod", p.Spec.Name, "err", err)
	}
	PushPendingTCP(p.ns.ino)
	return nil
}

func (h *Host) warn(msg string, args ...any) {
	if h.Log != nil {
		h.Log.Warn(msg, args...)
	}
}

// HandlesSignal tells whether pid catches or ignores sig (from /proc status).
func HandlesSignal(pid int, sig syscall.Signal) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		for _, field := range []string{"SigCgt:", "SigIgn:"} {
			if v, ok := strings.CutPrefix(line, field); ok {
				var mask uint64
				if _, err := fmt.Sscanf(strings.TrimSpace(v), "%x", &mask); err == nil && mask&(1<<(uint(sig)-1)) != 0 {
					return true
				}
			}
		}
	}
	return false
}

// RemoveLeftovers deletes every host-side veth on the pod bridge that is not
// the link of a pod named in keep.
func (h *Host) RemoveLeftovers(keep map[string]bool) {
	want := map[string]bool{}
	for name := range keep {
		want[HostVethName(name)] = true
	}
	for _, link := range HostVeths(h.Bridge) {
		if !want[link] {
			h.info("removing leftover veth", "veth", link)
			_ = DeleteLink(link)
		}
	}
}

func (h *Host) info(msg string, args ...any) {
	if h.Log != nil {
		h.Log.Info(msg, args...)
	}
}
