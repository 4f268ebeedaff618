package pod

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/cruz-hpc/cruz/internal/api"
)

// TestMain lets the test binary play a restored process that maps files
// (holdMain); otherwise it runs the tests.
func TestMain(m *testing.M) {
	if os.Getenv("CRUZ_TEST_HOLD") != "" {
		os.Exit(holdMain())
	}
	os.Exit(m.Run())
}

// holdMain maps CRUZ_TEST_MAP_SHARED shared and writable and
// CRUZ_TEST_MAP_PRIVATE private and read-only, closes both files (only the
// mappings hold them), says "ready" and waits for its stdin to close.
func holdMain() int {
	for _, m := range []struct {
		env         string
		flags       int
		prot, share int
	}{
		{"CRUZ_TEST_MAP_SHARED", unix.O_RDWR, unix.PROT_READ | unix.PROT_WRITE, unix.MAP_SHARED},
		{"CRUZ_TEST_MAP_PRIVATE", unix.O_RDONLY, unix.PROT_READ, unix.MAP_PRIVATE},
	} {
		path := os.Getenv(m.env)
		if path == "" {
			continue
		}
		fd, err := unix.Open(path, m.flags|unix.O_CLOEXEC, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if _, err := unix.Mmap(fd, 0, 4096, m.prot, m.share); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		unix.Close(fd)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// startHolder starts cmd as root, as PID 1 of a new pid namespace (as a
// restored pod's root is), waits until ready says it holds what it should,
// and ends it at the end of the test.
func startHolder(t *testing.T, cmd *exec.Cmd, ready func(pid int) bool) int {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		for _, p := range treePids(cmd.Process.Pid) {
			_ = unix.Kill(p, unix.SIGKILL)
		}
		_ = cmd.Wait()
	})
	pid := cmd.Process.Pid
	require.Eventually(t, func() bool { return ready(pid) }, 10*time.Second, 10*time.Millisecond)
	return pid
}

// sleepers is ready when the tree has n processes and every one runs
// sleep (so its descriptors are set).
func sleepers(n int) func(pid int) bool {
	return func(pid int) bool {
		pids := treePids(pid)
		if len(pids) != n {
			return false
		}
		for _, p := range pids {
			if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p)); err != nil || !strings.HasSuffix(exe, "sleep") {
				return false
			}
		}
		return true
	}
}

// What a restored process really holds is checked with its owner's
// rights: a file only root may use that way (held open, mapped, run or
// entered) is refused, naming the file, how it is held and the process;
// the owner's own files, files everyone may read, and CRIU's own log are
// accepted. The processes here run as root, as restored ones do until CRIU
// gives them their owner's credentials, right after the check.
func TestCheckRestoredFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("NOT RUN: holding root's files and taking another user's file system identity needs root")
	}
	const uid, gid = 4242, 4242 // no such user: nothing here is theirs by accident
	spec := Spec{Name: "j1-rank-0", UID: uid, GID: gid}
	// Not t.TempDir(): its parent is root's 0700 directory.
	dir, err := os.MkdirTemp("/tmp", "cruz-restored-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	file := func(name string, mode os.FileMode, owned bool) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, make([]byte, 4096), mode))
		require.NoError(t, os.Chmod(p, mode))
		if owned {
			require.NoError(t, os.Chown(p, uid, gid))
		}
		return p
	}
	own := file("own", 0o600, true)
	shared := file("shared", 0o644, false) // root's, everyone may read it
	secret := file("secret", 0o600, false)
	criuDir := filepath.Join(dir, "criu")
	require.NoError(t, os.Mkdir(criuDir, 0o700))
	criuLog := filepath.Join(criuDir, "restore.log")
	require.NoError(t, os.WriteFile(criuLog, nil, 0o600))
	private := filepath.Join(dir, "private")
	require.NoError(t, os.Mkdir(private, 0o700))
	rootSleep := filepath.Join(dir, "sleep")
	b, err := os.ReadFile("/bin/sleep")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(rootSleep, b, 0o700))
	execOnly := filepath.Join(dir, "xsleep")
	require.NoError(t, os.WriteFile(execOnly, b, 0o711))

	// sleepHolding runs sleep holding path as fd 3, opened with flags.
	sleepHolding := func(path string, flags int) *exec.Cmd {
		f, err := os.OpenFile(path, flags, 0)
		require.NoError(t, err)
		t.Cleanup(func() { f.Close() })
		cmd := exec.Command("sleep", "600")
		cmd.Dir = dir
		cmd.ExtraFiles = []*os.File{f}
		return cmd
	}
	// mapping runs this binary mapping the files (holdMain).
	mapping := func(env ...string) (*exec.Cmd, func(int) bool) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), append(env, "CRUZ_TEST_HOLD=1")...)
		in, err := cmd.StdinPipe()
		require.NoError(t, err)
		t.Cleanup(func() { in.Close() })
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		ready := make(chan bool, 1)
		go func() {
			line, _ := bufio.NewReader(out).ReadString('\n')
			ready <- line == "ready\n"
		}()
		return cmd, func(int) bool {
			select {
			case ok := <-ready:
				require.True(t, ok, "the holder did not map its files")
				return true
			default:
				return false
			}
		}
	}

	for _, c := range []struct {
		name string
		cmd  func() (*exec.Cmd, func(int) bool)
		dir  string // CRIU's work directory
		want []string
	}{
		{"own file opened for appending", func() (*exec.Cmd, func(int) bool) {
			return sleepHolding(own, os.O_WRONLY|os.O_APPEND), sleepers(1)
		}, criuDir, nil},
		{"root's file everyone may read, opened for reading", func() (*exec.Cmd, func(int) bool) {
			return sleepHolding(shared, os.O_RDONLY), sleepers(1)
		}, criuDir, nil},
		{"root's file everyone may read, opened for writing", func() (*exec.Cmd, func(int) bool) {
			return sleepHolding(shared, os.O_WRONLY|os.O_APPEND), sleepers(1)
		}, criuDir, []string{"restored pod holds " + shared + " opened for writing, which uid 4242 may not write", "fd 3", "sleep", "permission denied"}},
		{"root's secret opened for reading", func() (*exec.Cmd, func(int) bool) {
			return sleepHolding(secret, os.O_RDONLY), sleepers(1)
		}, criuDir, []string{"restored pod holds " + secret + " opened for reading, which uid 4242 may not read", "fd 3"}},
		{"root's secret held by a child of the root", func() (*exec.Cmd, func(int) bool) {
			cmd := exec.Command("sh", "-c", `sleep 600 3<"$1" & exec sleep 600`, "sh", secret)
			cmd.Dir = dir
			return cmd, sleepers(2)
		}, criuDir, []string{"restored pod holds " + secret + " opened for reading", "fd 3"}},
		{"CRIU's own log, still held by its code in the process", func() (*exec.Cmd, func(int) bool) {
			return sleepHolding(criuLog, os.O_WRONLY|os.O_APPEND), sleepers(1)
		}, criuDir, nil},
		{"the same log, not in CRIU's work directory", func() (*exec.Cmd, func(int) bool) {
			return sleepHolding(criuLog, os.O_WRONLY|os.O_APPEND), sleepers(1)
		}, dir, []string{"restored pod holds " + criuLog + " opened for writing"}},
		{"own file deleted", func() (*exec.Cmd, func(int) bool) {
			p := file("scratch", 0o600, true)
			cmd := sleepHolding(p, os.O_RDWR)
			require.NoError(t, os.Remove(p))
			return cmd, sleepers(1)
		}, criuDir, nil},
		{"own file mapped shared and writable, root's mapped private", func() (*exec.Cmd, func(int) bool) {
			return mapping("CRUZ_TEST_MAP_SHARED="+own, "CRUZ_TEST_MAP_PRIVATE="+shared)
		}, criuDir, nil},
		{"root's file mapped shared and writable", func() (*exec.Cmd, func(int) bool) {
			return mapping("CRUZ_TEST_MAP_SHARED=" + shared)
		}, criuDir, []string{"restored pod holds " + shared + " mapped shared for writing, which uid 4242 may not read and write", "mapping "}},
		{"an executable only root may run", func() (*exec.Cmd, func(int) bool) {
			cmd := exec.Command(rootSleep, "600")
			cmd.Dir = dir
			return cmd, sleepers(1)
		}, criuDir, []string{"restored pod holds " + rootSleep + " as its executable, which uid 4242 may not run"}},
		{"an execute-only program of root's (run, not read)", func() (*exec.Cmd, func(int) bool) {
			cmd := exec.Command(execOnly, "600")
			cmd.Dir = dir
			return cmd, sleepers(1)
		}, criuDir, nil},
		{"a working directory only root may enter", func() (*exec.Cmd, func(int) bool) {
			cmd := exec.Command("sleep", "600")
			cmd.Dir = private
			return cmd, sleepers(1)
		}, criuDir, []string{"restored pod holds " + private + " as its working directory, which uid 4242 may not enter"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd, ready := c.cmd()
			pid := startHolder(t, cmd, ready)
			err := CheckRestoredFiles(pid, spec, c.dir)
			if c.want == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.ErrorIs(t, err, api.ErrForbidden, "a refusal is forbidden")
			for _, w := range c.want {
				require.Contains(t, err.Error(), w)
			}
			// The check looked, it changed nothing: the process still
			// holds the file (CRIU is the one that kills it).
			require.NoError(t, unix.Kill(pid, 0))
		})
	}
}
