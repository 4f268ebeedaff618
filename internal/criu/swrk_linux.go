package criu

// This file owns the conversation with CRIU. It speaks CRIU's RPC protocol
// ("criu swrk") with go-criu's protobuf types, which stay inside this file:
// the rest of Cruz uses DumpOptions and RestoreOptions.
//
// We run "criu swrk" ourselves rather than through go-criu's Criu object so
// that descriptors CRIU must inherit (images dir, work dir, pod netns, stdio
// pipes) are handed over with exec.Cmd.ExtraFiles, never by clearing
// close-on-exec in the agent, and so that a context can kill a CRIU that
// hangs.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"github.com/cruz-hpc/cruz/internal/cgroups"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// MinVersion is the oldest CRIU that works on current kernels: 4.1 cannot
// dump TCP sockets on Linux >= 6.16, and 3.x fails on the new vDSO layout.
const MinVersion = 40200

// netnsKey names the pod's network namespace in CRIU's external-resource map.
const netnsKey = "cruz-pod-net"

// Swrk runs CRIU operations, each through a fresh "criu swrk".
type Swrk struct {
	Path     string // the criu binary
	LogLevel int    // CRIU's log level (0-4)
	Self     string // the agent's executable, which launches CRIU (launch_linux.go)
}

// DumpOptions says what to checkpoint and how.
type DumpOptions struct {
	Pid        int    // root of the pod's process tree (its PID 1, seen from the agent)
	ImagesDir  string // where the images go (exists, empty)
	WorkDir    string // where CRIU's log goes (exists)
	NetnsInode uint64 // the pod netns's inode: it is external to CRIU
	// UID and GID own the pod's processes. CRIU runs as them, with root's
	// capabilities: the kernel lets a process read another's resource
	// limits only if their ids match or it holds CAP_SYS_RESOURCE, which
	// root may lack (some sandboxes drop it).
	UID, GID uint32
	// KeepRunning resumes the pod right after the dump. Otherwise the pod
	// is left stopped (SIGSTOP) after the dump, so that nothing it does can
	// follow the checkpoint; the caller kills it after the commit, or resumes
	// it if the checkpoint is abandoned.
	KeepRunning bool
	Timeout     time.Duration
	// PostDump, if set, runs once CRIU has written every image and before
	// it lets the processes go on (or stops them): the one moment the
	// images and the files the processes write agree. An error fails the
	// dump, and CRIU resumes the processes.
	PostDump func() error
}

// RestoreOptions says what to restore and into what.
type RestoreOptions struct {
	ImagesDir string
	WorkDir   string
	NetnsPath string
	// Pipes maps the dump-time identity of a pipe the pod wrote to
	// ("pipe:[INODE]") to the new pipe end that replaces it.
	Pipes   map[string]*os.File
	Timeout time.Duration
	// PostRestore, if set, runs once CRIU has restored every process and
	// before it lets them run, with the pid of the restored root (as the
	// agent sees it): the one moment the agent can look at what the
	// processes really hold. An error fails the restore, and CRIU kills
	// the restored processes.
	PostRestore func(pid int) error
	// Cgroups maps a controller to the cgroup the restored tree goes into
	// in its hierarchy, whatever cgroups it was dumped in: a Slurm step's
	// on the restoring node. CRIU is put there before it restores anything
	// and leaves cgroups alone, so that every restored process is born in
	// them and its memory is charged to them. Without: CRIU puts the tree
	// back into the cgroups of the dump.
	Cgroups map[string]string
}

// DumpStats are the figures CRIU reports for one dump.
type DumpStats struct {
	Duration time.Duration
}

func (c *Swrk) Dump(ctx context.Context, o DumpOptions) (DumpStats, error) {
	start := time.Now()
	imgs, err := openDir(o.ImagesDir)
	if err != nil {
		return DumpStats{}, err
	}
	defer imgs.Close()
	work, err := openDir(o.WorkDir)
	if err != nil {
		return DumpStats{}, err
	}
	defer work.Close()
	// CRIU opens the images and work dirs through /proc/<agent>/fd/N, so
	// these are the agent's own descriptor numbers.
	opts := &rpc.CriuOpts{
		ImagesDirFd:    proto.Int32(int32(imgs.Fd())),
		WorkDirFd:      proto.Int32(int32(work.Fd())),
		Pid:            proto.Int32(int32(o.Pid)),
		LogFile:        proto.String("dump.log"),
		LogLevel:       proto.Int32(int32(c.LogLevel)),
		TcpEstablished: proto.Bool(true),
		FileLocks:      proto.Bool(true),
		External:       []string{fmt.Sprintf("net[%d]:%s", o.NetnsInode, netnsKey)},
		// The Cruz filter (internal/pod) already holds the pod's traffic.
		NetworkLock:  rpc.CriuNetworkLockMethod_SKIP.Enum(),
		LeaveRunning: proto.Bool(true),
		LeaveStopped: proto.Bool(!o.KeepRunning),
		// Deleted files a job still has open (scratch files, shared
		// memory) are saved in the images up to this size each.
		GhostLimit: proto.Uint32(64 << 20),
		AutoExtMnt: proto.Bool(true),
		ExtMasters: proto.Bool(true),
		ExtSharing: proto.Bool(true),
	}
	if o.Timeout > 0 {
		opts.Timeout = proto.Uint32(uint32(o.Timeout.Seconds()) + 1)
	}
	var notify func(string, int) error
	var hookErr error
	if o.PostDump != nil {
		opts.NotifyScripts = proto.Bool(true)
		notify = func(script string, _ int) error {
			if script != "post-dump" {
				return nil
			}
			hookErr = o.PostDump()
			return hookErr
		}
	}
	ctx, cancel := withOptionalTimeout(ctx, o.Timeout)
	defer cancel()
	_, err = c.callNotify(ctx, o.UID, o.GID, rpc.CriuReqType_DUMP, opts, nil, notify)
	if hookErr != nil {
		// CRIU only says that the script failed: say what did.
		return DumpStats{}, hookErr
	}
	if err != nil {
		return DumpStats{}, c.explain("dump", err, filepath.Join(o.WorkDir, "dump.log"))
	}
	return DumpStats{Duration: time.Since(start)}, nil
}

// restore brings a pod's process tree back into the netns at o.NetnsPath and
// returns the pid of its root, a child of the agent.
func (c *Swrk) Restore(ctx context.Context, o RestoreOptions) (int, error) {
	imgs, err := openDir(o.ImagesDir)
	if err != nil {
		return 0, err
	}
	defer imgs.Close()
	work, err := openDir(o.WorkDir)
	if err != nil {
		return 0, err
	}
	defer work.Close()
	ns, err := os.Open(o.NetnsPath)
	if err != nil {
		return 0, fmt.Errorf("open pod netns: %w", err)
	}
	defer ns.Close()
	// Descriptors that the restored processes inherit must be CRIU's own:
	// they are handed over as ExtraFiles, at fd 4, 5, ... (fd 3 is the RPC
	// socket). The images and work dirs CRIU opens through the agent's
	// /proc/<pid>/fd, so those are the agent's numbers.
	files := []*os.File{ns}
	inherit := []*rpc.InheritFd{{Key: proto.String(netnsKey), Fd: proto.Int32(4)}}
	for key, f := range o.Pipes {
		inherit = append(inherit, &rpc.InheritFd{Key: proto.String(key), Fd: proto.Int32(int32(4 + len(files)))})
		files = append(files, f)
	}
	opts := &rpc.CriuOpts{
		ImagesDirFd:    proto.Int32(int32(imgs.Fd())),
		WorkDirFd:      proto.Int32(int32(work.Fd())),
		LogFile:        proto.String("restore.log"),
		LogLevel:       proto.Int32(int32(c.LogLevel)),
		TcpEstablished: proto.Bool(true),
		FileLocks:      proto.Bool(true),
		InheritFd:      inherit,
		NetworkLock:    rpc.CriuNetworkLockMethod_SKIP.Enum(),
		RstSibling:     proto.Bool(true),
		// The pod's mount namespace is a slave copy of the node's: its
		// root is the node's root.
		Root:       proto.String("/"),
		AutoExtMnt: proto.Bool(true),
		ExtMasters: proto.Bool(true),
		ExtSharing: proto.Bool(true),
	}
	// CRIU writes its restore statistics into the images directory, also
	// when a post-restore hook fails. The checkpoint must stay exactly as
	// committed (its checksums are verified before every restore), so that
	// file goes.
	defer os.Remove(filepath.Join(o.ImagesDir, "stats-restore"))
	var notify func(string, int) error
	var hookErr error
	rootFd := -1 // a pidfd of the restored root, once the hook has run
	if o.PostRestore != nil {
		// Only with a hook: each notification is a round trip that CRIU
		// waits for.
		opts.NotifyScripts = proto.Bool(true)
		notify = func(script string, pid int) error {
			if script != "post-restore" {
				return nil
			}
			if pid <= 0 {
				hookErr = fmt.Errorf("criu restore: no pid in CRIU's post-restore notification")
				return hookErr
			}
			if fd, err := unix.PidfdOpen(pid, 0); err == nil {
				rootFd = fd
			}
			hookErr = o.PostRestore(pid)
			return hookErr
		}
	}
	defer func() {
		if rootFd >= 0 {
			unix.Close(rootFd)
		}
	}()
	if len(o.Cgroups) > 0 {
		// CRIU's --cgroup-root did not do it: with it, the restored tree
		// stayed in the agent's memory cgroup.
		opts.ManageCgroupsMode = rpc.CriuCgMode_IGNORE.Enum()
	}
	ctx, cancel := withOptionalTimeout(ctx, o.Timeout)
	defer cancel()
	resp, err := c.exec(ctx, o.Cgroups, 0, 0, rpc.CriuReqType_RESTORE, opts, files, notify)
	if hookErr != nil {
		// CRIU has killed the restored processes, but their root is a
		// child of the agent (a sibling of CRIU's), which only the agent
		// can reap. The pidfd names that process and no other, even if
		// it is gone; waitid says ECHILD at once if it is not ours.
		if rootFd >= 0 {
			_ = unix.PidfdSendSignal(rootFd, unix.SIGKILL, nil, 0)
			var info unix.Siginfo
			_ = unix.Waitid(unix.P_PIDFD, rootFd, &info, unix.WEXITED, nil)
		}
		// CRIU only says that the script failed: say what did.
		return 0, hookErr
	}
	if err != nil {
		return 0, c.explain("restore", err, filepath.Join(o.WorkDir, "restore.log"))
	}
	pid := int(resp.GetRestore().GetPid())
	if pid <= 0 {
		return 0, fmt.Errorf("criu restore: no pid in CRIU's answer")
	}
	return pid, nil
}

// Version asks CRIU for its version as major*10000+minor*100+sublevel.
func (c *Swrk) Version(ctx context.Context) (int, error) {
	resp, err := c.call(ctx, rpc.CriuReqType_VERSION, nil, nil)
	if err != nil {
		return 0, err
	}
	v := resp.GetVersion()
	return int(v.GetMajorNumber()*10000 + v.GetMinorNumber()*100 + v.GetSublevel()), nil
}

// Check refuses a CRIU that is missing, too old, or that finds the kernel
// lacking; the error says what to do.
func (c *Swrk) Check(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	// CRIU is started through the agent's launcher, which would only say
	// that its exec failed: look for it first.
	if _, err := exec.LookPath(c.Path); err != nil {
		return 0, fmt.Errorf("criu not found at %q: install CRIU >= 4.2 (run `make deps`, or scripts/install-deps.sh) or set criu.path in the config", c.Path)
	}
	v, err := c.Version(ctx)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("criu not found at %q: install CRIU >= 4.2 (run `make deps`, or scripts/install-deps.sh) or set criu.path in the config", c.Path)
		}
		return 0, fmt.Errorf("ask criu at %q for its version: %w (is it CRIU >= 4.2? run `%s --version`)", c.Path, err, c.Path)
	}
	if v < MinVersion {
		return v, fmt.Errorf("criu at %q is version %s, too old: Cruz needs CRIU >= 4.2 (older versions cannot dump TCP sockets on Linux >= 6.16); install it with `make deps` (scripts/install-deps.sh) or set criu.path in the config", c.Path, VersionString(v))
	}
	cmd := exec.CommandContext(ctx, c.Path, "check")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return v, fmt.Errorf("`%s check` says the kernel lacks what CRIU needs:\n%s\nfix the kernel or its configuration (see `criu check --all`)", c.Path, quoteLines(string(out), 12))
	}
	return v, nil
}

// dropHarmless removes lines CRIU prints on every run here that say nothing
// about a failure.
func dropHarmless(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.Contains(l, "RLIMIT_NOFILE") && !strings.Contains(l, "XDG_RUNTIME_DIR") && !strings.Contains(l, "kdat cache") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func VersionString(v int) string {
	return fmt.Sprintf("%d.%d.%d", v/10000, v/100%100, v%100)
}

// call runs one request through a fresh "criu swrk". files are handed to CRIU
// at fds 4, 5, ... (fd 3 is the RPC socket).
func (c *Swrk) call(ctx context.Context, typ rpc.CriuReqType, opts *rpc.CriuOpts, files []*os.File) (*rpc.CriuResp, error) {
	return c.callAs(ctx, 0, 0, typ, opts, files)
}

// callAs is call with CRIU running as uid and gid (all of its ids) but with
// root's capabilities, in CRIU's unprivileged mode (see launch_linux.go).
func (c *Swrk) callAs(ctx context.Context, uid, gid uint32, typ rpc.CriuReqType, opts *rpc.CriuOpts, files []*os.File) (*rpc.CriuResp, error) {
	return c.callNotify(ctx, uid, gid, typ, opts, files, nil)
}

// callNotify is callAs that answers CRIU's notifications (opts.NotifyScripts)
// with notify's verdict on each.
func (c *Swrk) callNotify(ctx context.Context, uid, gid uint32, typ rpc.CriuReqType, opts *rpc.CriuOpts, files []*os.File, notify func(script string, pid int) error) (*rpc.CriuResp, error) {
	return c.exec(ctx, nil, uid, gid, typ, opts, files, notify)
}

// exec runs one CRIU for one request, in the cgroups cg if any (see
// RestoreOptions.Cgroups), answering its notifications with notify.
func (c *Swrk) exec(ctx context.Context, cg map[string]string, uid, gid uint32, typ rpc.CriuReqType, opts *rpc.CriuOpts, files []*os.File, notify func(script string, pid int) error) (*rpc.CriuResp, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("criu rpc socket: %w", err)
	}
	client := os.NewFile(uintptr(fds[0]), "criu-rpc-client")
	server := os.NewFile(uintptr(fds[1]), "criu-rpc-server")
	defer client.Close()
	// Always through the launcher: it gives CRIU its own mount namespace
	// (and, for a pod's user, that user's ids with root's capabilities).
	argv := criuAsCommand(c.Self, uid, gid, c.Path, "swrk", "3")
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if uid != 0 || gid != 0 {
		opts.Unprivileged = proto.Bool(true)
	}
	cmd.ExtraFiles = append([]*os.File{server}, files...)
	var stderr bytes.Buffer
	cmd.Stderr = &limitedWriter{w: &stderr, n: 64 << 10}
	if err := cmd.Start(); err != nil {
		server.Close()
		return nil, fmt.Errorf("start criu: %w", err)
	}
	server.Close()
	// CRIU waits for the request: nothing is restored before it is in.
	if err := cgroups.Move(cmd.Process.Pid, cg); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("criu %s: %w", strings.ToLower(typ.String()), err)
	}
	resp, rerr := exchange(client, &rpc.CriuReq{Type: typ.Enum(), Opts: opts}, notify)
	client.Close()
	werr := cmd.Wait()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("criu %s: %w", strings.ToLower(typ.String()), ctx.Err())
	}
	if rerr != nil {
		if s := strings.TrimSpace(dropHarmless(stderr.String())); s != "" {
			return nil, fmt.Errorf("criu %s: %w: %s", strings.ToLower(typ.String()), rerr, s)
		}
		if werr != nil {
			return nil, fmt.Errorf("criu %s: %w (criu: %v)", strings.ToLower(typ.String()), rerr, werr)
		}
		return nil, fmt.Errorf("criu %s: %w", strings.ToLower(typ.String()), rerr)
	}
	return resp, nil
}

// exchange sends one request and reads the answer. With notifications asked
// for (NotifyScripts), CRIU sends one at each step of its work (pre-dump,
// post-dump, ...) and waits for the verdict of notify on it (nil: go on)
// before it goes on; the final answer comes after them. pid is the one the
// notification carries (the restored root's, on setup-namespaces and
// post-restore), 0 if none.
func exchange(sock *os.File, req *rpc.CriuReq, notify func(script string, pid int) error) (*rpc.CriuResp, error) {
	if err := send(sock, req); err != nil {
		return nil, fmt.Errorf("send request: %w", err)
	}
	buf := make([]byte, 1<<20)
	var resp *rpc.CriuResp
	for {
		n, err := sock.Read(buf)
		if err != nil {
			return nil, fmt.Errorf("read answer: %w", err)
		}
		resp = &rpc.CriuResp{}
		if err := proto.Unmarshal(buf[:n], resp); err != nil {
			return nil, fmt.Errorf("decode answer: %w", err)
		}
		if resp.GetType() != rpc.CriuReqType_NOTIFY {
			break
		}
		ok := true
		if notify != nil {
			ok = notify(resp.GetNotify().GetScript(), int(resp.GetNotify().GetPid())) == nil
		}
		if err := send(sock, &rpc.CriuReq{Type: rpc.CriuReqType_NOTIFY.Enum(), NotifySuccess: proto.Bool(ok)}); err != nil {
			return nil, fmt.Errorf("answer notification %q: %w", resp.GetNotify().GetScript(), err)
		}
	}
	if !resp.GetSuccess() {
		msg := strings.TrimSpace(dropHarmless(resp.GetCrErrmsg()))
		if msg == "" {
			msg = "operation failed"
		}
		return resp, fmt.Errorf("%s (errno %d)", msg, resp.GetCrErrno())
	}
	if resp.GetType() != req.GetType() {
		return resp, fmt.Errorf("unexpected answer %s to %s", resp.GetType(), req.GetType())
	}
	return resp, nil
}

func send(sock *os.File, req *rpc.CriuReq) error {
	b, err := proto.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	_, err = sock.Write(b)
	return err
}

// explain turns a failed CRIU call into an error that quotes CRIU's log
// around its first errors and, where the log shows a known cause, says what
// to do about it.
func (c *Swrk) explain(op string, err error, logPath string) error {
	log, rerr := os.ReadFile(logPath)
	if rerr != nil {
		return fmt.Errorf("criu %s failed: %w (no CRIU log at %s)", op, err, logPath)
	}
	text := string(log)
	msg := fmt.Sprintf("criu %s failed: %v\nCRIU log %s says:\n%s", op, err, logPath, errorContext(text, 2, 16))
	for _, h := range criuHints {
		if strings.Contains(text, h.needle) {
			msg += "\nhint: " + h.advice
		}
	}
	return errors.New(msg)
}

var criuHints = []struct{ needle, advice string }{
	{"Unexpected rt vDSO area bounds", "this CRIU is too old for the kernel; install CRIU >= 4.2 (make deps)"},
	{"Can't get 1:16 opt", "this CRIU cannot dump TCP sockets on Linux >= 6.16; install CRIU >= 4.2 (make deps)"},
	{"has bad size", "a file the pod had open changed after the checkpoint; Cruz puts back only the files the job holds open for writing, so a file it only reads must not change, and pods must not share open files with other processes"},
	{"Can't dump ghost file", "the job holds a large deleted file open (often MPI shared memory in /dev/shm); keep MPI on TCP (mpi.env in the config: UCX_TLS=tcp,self) or close such files"},
	{"No space left on device", "the checkpoint store or run directory is full; free space or point store.dir elsewhere"},
	{"unreachable sharing", "the pod was entered with a new mount namespace (e.g. `ip netns exec`); start pods only through cruzd"},
}

// errorContext returns the lines around the first lines of log that contain
// "Error", at most max lines, each indented.
func errorContext(log string, around, max int) string {
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	keep := make([]bool, len(lines))
	found := false
	for i, l := range lines {
		if strings.Contains(l, "Error") && !strings.Contains(l, "RLIMIT_NOFILE") {
			found = true
			for j := max0(i - around); j <= i+around && j < len(lines); j++ {
				keep[j] = true
			}
		}
	}
	if !found { // no "Error" line: the end of the log is the best we have
		for i := max0(len(lines) - max); i < len(lines); i++ {
			keep[i] = true
		}
	}
	var out []string
	last := -1
	for i, k := range keep {
		if !k {
			continue
		}
		if last >= 0 && i != last+1 {
			out = append(out, "    ...")
		}
		out = append(out, "    "+lines[i])
		last = i
		if len(out) >= max {
			break
		}
	}
	return strings.Join(out, "\n")
}

func quoteLines(s string, max int) string {
	sc := bufio.NewScanner(strings.NewReader(s))
	var out []string
	for sc.Scan() && len(out) < max {
		out = append(out, "    "+sc.Text())
	}
	return strings.Join(out, "\n")
}

func max0(i int) int {
	if i < 0 {
		return 0
	}
	return i
}

func openDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("open directory: %w", err)
	}
	return f, nil
}

func withOptionalTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// limitedWriter keeps the first n bytes written to it and drops the rest.
type limitedWriter struct {
	w interface{ Write([]byte) (int, error) }
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := len(p)
		if k > l.n {
			k = l.n
		}
		l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}
