package pod

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A pod whose PID 1 is still the agent's executable running as root is
// starting, and a dump waits for it to become the command; any other
// process is not, whatever it runs as.
func TestPodStarting(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP: needs root")
	}
	self, err := os.Executable()
	require.NoError(t, err)
	h := &Host{Self: self}

	// The test binary as root plays the pod init (holdMain waits on stdin).
	init := exec.Command(self)
	init.Env = append(os.Environ(), "CRUZ_TEST_HOLD=1")
	stdin, err := init.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, init.Start())
	t.Cleanup(func() { stdin.Close(); _ = init.Wait() })
	p := &Pod{PID: init.Process.Pid, exited: make(chan struct{})}
	p.Spec.Name = "job-r0"
	require.Eventually(t, func() bool { return h.starting(p) }, 5*time.Second, 10*time.Millisecond, "the test binary as root is a starting pod")

	sleep := exec.Command("sleep", "30")
	require.NoError(t, sleep.Start())
	t.Cleanup(func() { _ = sleep.Process.Kill(); _ = sleep.Wait() })
	assert.False(t, h.starting(&Pod{PID: sleep.Process.Pid}), "a pod running its command")

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, h.awaitStarted(ctx, p), context.DeadlineExceeded, "a dump waits while the pod starts")
	assert.NoError(t, h.awaitStarted(context.Background(), &Pod{PID: sleep.Process.Pid}))
}
