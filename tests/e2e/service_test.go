package e2e

// cruzd as a service: systemd's readiness protocol (Type=notify) and the unit
// file. PID 1 here is not systemd, so the test listens on NOTIFY_SOCKET
// itself, as systemd would.

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestServiceReadiness(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	sockPath := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	require.NoError(t, err)
	defer conn.Close()
	got := make(chan string, 8)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			got <- string(buf[:n])
		}
	}()

	a := startAgent(t, agentOptions{env: []string{"NOTIFY_SOCKET=" + sockPath}})
	var ready string
	select {
	case ready = <-got:
	case <-time.After(10 * time.Second):
		t.Fatalf("cruzd never said READY=1 on NOTIFY_SOCKET:\n%s", a.log())
	}
	assert.Contains(t, strings.Split(ready, "\n"), "READY=1", "the first message is readiness: %q", ready)
	assert.Contains(t, ready, "STATUS=serving on "+a.socket)
	_, err = api.NewClient(a.socket).Version(t.Context())
	require.NoError(t, err, "once READY=1 is sent the socket serves")

	a.stop()
	select {
	case msg := <-got:
		assert.Contains(t, msg, "STOPPING=1", "a stopping agent says so")
	case <-time.After(10 * time.Second):
		t.Errorf("cruzd never said STOPPING=1")
	}
}

// TestServiceUnit checks configs/cruzd.service with systemd-analyze verify
// (the unit's ExecStart pointed at the built cruzd; the man pages it names
// are checked by the package test, where they are installed) and that its KillMode
// leaves the pods alive when only the agent goes.
func TestServiceUnit(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("SKIP: systemd-analyze is not installed (apt-get install systemd)")
	}
	unit, err := os.ReadFile("../../configs/cruzd.service")
	require.NoError(t, err)
	text := string(unit)
	assert.Contains(t, text, "\nType=notify\n")
	assert.Contains(t, text, "\nKillMode=process\n", "only cruzd is killed: pods survive an agent crash and are taken back")
	assert.Contains(t, text, "\nRestart=on-failure\n")
	dir := t.TempDir()
	local := strings.ReplaceAll(text, "/usr/sbin/cruzd", testenv.Bin(t, "cruzd"))
	local = strings.ReplaceAll(local, "/bin/kill", mustLookPath(t, "kill"))
	path := filepath.Join(dir, "cruzd.service")
	require.NoError(t, os.WriteFile(path, []byte(local), 0o644))
	out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput()
	// verify also complains about units on this machine that have nothing
	// to do with ours; only lines about cruzd.service count.
	var ours []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "cruzd.service") {
			ours = append(ours, l)
		}
	}
	assert.Empty(t, ours, "systemd-analyze verify: %v\n%s", err, out)
}

func mustLookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	require.NoError(t, err)
	return p
}
