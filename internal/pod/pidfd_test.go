package pod

import (
	"io"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestSignalNeverReachesAReusedPID: once a pod's PID 1 has ended and been
// reaped, a signal to the pod reaches nothing, even when its PID now names
// another live process (simulated by pointing PID at one).
func TestSignalNeverReachesAReusedPID(t *testing.T) {
	first := exec.Command("sleep", "30")
	require.NoError(t, first.Start())
	p := &Pod{Spec: Spec{Name: "p"}, PID: first.Process.Pid}
	f, err := openPidfd(p.PID, 0)
	require.NoError(t, err)
	p.setPidfd(f)
	require.NoError(t, first.Process.Kill())
	_ = first.Wait() // reaped: its PID may be anyone's now

	other := exec.Command("sleep", "30")
	require.NoError(t, other.Start())
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	p.PID = other.Process.Pid // as if the kernel had reused the PID

	require.NoError(t, p.Signal(unix.SIGKILL), "a pod whose PID 1 is gone takes signals quietly")
	require.NoError(t, unix.Kill(other.Process.Pid, 0), "the process that has the PID now lives on")
	p.closePidfd()
	require.NoError(t, p.Signal(unix.SIGKILL), "and after Destroy nothing is signalled either")
}

// TestSignalInNetnsChecksTheNamespace: a process outside the namespace is
// not signalled.
func TestSignalInNetnsChecksTheNamespace(t *testing.T) {
	c := exec.Command("sleep", "30")
	require.NoError(t, c.Start())
	t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
	signalInNetns(c.Process.Pid, 1, unix.SIGKILL) // no netns has inode 1
	require.NoError(t, unix.Kill(c.Process.Pid, 0), "not in that namespace: not killed")
}

// TestPipeReaderOnlyOpensPipes: re-adopting a pod's output reads its stdout
// pipe, and refuses a descriptor that is a file.
func TestPipeReaderOnlyOpensPipes(t *testing.T) {
	c := exec.Command("sh", "-c", "echo hello; sleep 30")
	out, err := c.StdoutPipe()
	require.NoError(t, err)
	file, err := os.CreateTemp(t.TempDir(), "secret")
	require.NoError(t, err)
	_, err = file.WriteString("not for the pod's output\n")
	require.NoError(t, err)
	c.Stderr = file
	require.NoError(t, c.Start())
	t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
	pidfd, err := openPidfd(c.Process.Pid, 0)
	require.NoError(t, err)
	defer pidfd.Close()

	key, r, err := pipeReader(pidfd, 1)
	require.NoError(t, err)
	require.Regexp(t, `^pipe:\[\d+\]$`, key)
	buf := make([]byte, 6)
	done := make(chan error, 1)
	go func() { _, err := io.ReadFull(r, buf); done <- err }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("nothing read from the pipe")
	}
	r.Close()
	_ = out
	require.Equal(t, "hello\n", string(buf))

	_, _, err = pipeReader(pidfd, 2)
	require.ErrorContains(t, err, "descriptor 2 is not a pipe")
}
