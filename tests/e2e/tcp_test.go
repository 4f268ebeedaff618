package e2e

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/tests/check"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The TCP stream of these tests: 32 MiB in 64 KiB writes from the client,
// read by a server that sleeps between reads, so that its receive queue and
// the client's send queue are full most of the time and every checkpoint
// catches bytes in flight. Uninterrupted it takes about 4 s.
const (
	tcpPort      = 7311
	tcpTotal     = 64 << 20 // more than the client writes before its stop-checkpoint, however short the holds
	tcpChunk     = 64 << 10
	tcpSendDelay = 2  // ms between the client's writes
	tcpReadDelay = 30 // ms between the server's reads (of up to 256 KiB)
)

// tcpPair is a tcp_stream server job and a client job streaming to it.
type tcpPair struct {
	srv, cli *cruzCmd
	srvIP    string
}

// startTCPPair starts the server job "srv", then the client job "cli" that
// connects to the server pod's address, and waits until bytes flow.
func startTCPPair(t *testing.T, a *agent, u testenv.User, dir string) tcpPair {
	t.Helper()
	app := testenv.Bin(t, "tcp_stream")
	srv := a.startCruz(u, dir, "run", "--plain", "--name", "srv", "--", app, "server",
		fmt.Sprint(tcpPort), fmt.Sprint(tcpTotal), fmt.Sprint(tcpReadDelay))
	sj := awaitJobState(a, u, "srv", 30*time.Second, api.StateRunning)
	require.Len(t, sj.Pods, 1)
	ip := sj.Pods[0].IP
	require.NotEmpty(t, ip)
	cli := a.startCruz(u, dir, "run", "--plain", "--name", "cli", "--", app, "client", ip,
		fmt.Sprint(tcpPort), fmt.Sprint(tcpTotal), fmt.Sprint(tcpChunk), fmt.Sprint(tcpSendDelay))
	cj := awaitJobState(a, u, "cli", 30*time.Second, api.StateRunning)
	require.Len(t, cj.Pods, 1)
	require.NotEqual(t, ip, cj.Pods[0].IP, "the two jobs' pods have their own addresses")
	// The server reports every MiB it has checked.
	srv.waitOutput(t, "recv 1048576\n", 30*time.Second)
	return tcpPair{srv: srv, cli: cli, srvIP: ip}
}

// stillStreaming fails the test if the server has already received it all:
// the checkpoints must catch the stream in the middle.
func stillStreaming(t *testing.T, srv *cruzCmd, what string) {
	t.Helper()
	out := srv.stdout.String()
	require.NotContains(t, out, "server ok", "the stream ended before %s: make it slower", what)
	require.NotContains(t, out, fmt.Sprintf("recv %d\n", tcpTotal), "the stream ended before %s: make it slower", what)
}

// recvLines is what the server prints for the whole stream.
func recvLines() []string {
	var out []string
	for k := 1; k <= tcpTotal>>20; k++ {
		out = append(out, fmt.Sprintf("recv %d", k<<20))
	}
	return append(out, fmt.Sprintf("server ok %d bytes", tcpTotal))
}

// leaveRunningCheckpoints checkpoints both jobs, one after the other and
// while both keep running, rounds times, each time once the server's receive
// queue (or the client's send queue) holds bytes, and checks that the
// checkpoint caught them.
func leaveRunningCheckpoints(t *testing.T, a *agent, u testenv.User, p tcpPair, rounds int) {
	t.Helper()
	for i := 0; i < rounds; i++ {
		for _, job := range []string{"srv", "cli"} {
			stillStreaming(t, p.srv, "the leave-running checkpoints")
			// The server drains its receive queue while the dump's
			// traffic block holds new bytes back; start from a full one.
			awaitQueued(t, a, u, job, job == "srv", 1<<20)
			ck := checkpointJSON(t, a, u, job, false)
			assert.Greater(t, tcpImageBytes(t, ck.Dir), int64(64<<10), "checkpoint %s of %s holds the bytes in flight", ck.ID, job)
		}
	}
}

// checkpointBothAtOnce checkpoints both jobs at the same time, both left
// running.
func checkpointBothAtOnce(t *testing.T, a *agent, u testenv.User, p tcpPair) {
	t.Helper()
	stillStreaming(t, p.srv, "the simultaneous checkpoints")
	awaitQueued(t, a, u, "srv", true, 1<<20)
	cmds := map[string]*cruzCmd{}
	for _, job := range []string{"srv", "cli"} {
		cmds[job] = a.startCruz(u, "", "checkpoint", "--json", job)
	}
	for job, c := range cmds {
		r := c.wait(t, 2*time.Minute)
		require.Equal(t, 0, r.Code, "cruz checkpoint %s (at the same time as the other job's): %s", job, r.Stderr)
		var ck api.Checkpoint
		require.NoError(t, json.Unmarshal([]byte(r.Stdout), &ck), "cruz checkpoint --json printed: %s", r.Stdout)
		assert.Greater(t, tcpImageBytes(t, ck.Dir), int64(64<<10), "checkpoint %s of %s holds the bytes in flight", ck.ID, job)
	}
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	l := check.NonEmptyLines(s)
	if len(l) == 0 {
		return ""
	}
	return l[len(l)-1]
}

// tcpQueues reads the receive and send queues of the established TCP
// connection in the network namespace of process pid (with ss).
func tcpQueues(t *testing.T, pid int) (recvQ, sendQ int64, ok bool) {
	t.Helper()
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-n", "ss", "-tnH", "state", "established").Output()
	if err != nil {
		return 0, 0, false
	}
	for _, line := range check.NonEmptyLines(string(out)) {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		r, err1 := strconv.ParseInt(f[0], 10, 64)
		s, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 == nil && err2 == nil {
			return r, s, true
		}
	}
	return 0, 0, false
}

// awaitQueued waits until the job's pod has at least min bytes in the
// receive (recv) or send queue of its TCP connection, so that the next
// checkpoint surely catches bytes in flight.
func awaitQueued(t *testing.T, a *agent, u testenv.User, job string, recv bool, min int64) {
	t.Helper()
	j := a.status(u, job)
	require.Len(t, j.Pods, 1)
	require.NotZero(t, j.Pods[0].PID)
	deadline := time.Now().Add(15 * time.Second)
	var r, s int64
	for time.Now().Before(deadline) {
		var ok bool
		if r, s, ok = tcpQueues(t, j.Pods[0].PID); ok && ((recv && r >= min) || (!recv && s >= min)) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("job %s: no %d bytes queued on its TCP connection within 15s (recv-q %d, send-q %d)", job, min, r, s)
}

// checkpointJSON checkpoints job (with stop, stops it) and returns the
// checkpoint that cruz checkpoint --json prints.
func checkpointJSON(t *testing.T, a *agent, u testenv.User, job string, stop bool) api.Checkpoint {
	t.Helper()
	args := []string{"checkpoint", "--json", job}
	if stop {
		args = append(args, "--stop")
	}
	r := a.cruz(u, "", args...)
	require.Equal(t, 0, r.Code, "cruz %v: %s", args, r.Stderr)
	var ck api.Checkpoint
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &ck), "cruz checkpoint --json printed: %s", r.Stdout)
	require.Regexp(t, `^ckpt-\d{4}$`, ck.ID)
	require.Equal(t, stop, ck.Stopped)
	return ck
}

// tcpImageBytes sums the sizes of CRIU's TCP stream images (the state and
// the queued data of each connected TCP socket) in a checkpoint directory:
// well above a few hundred bytes means bytes were in flight.
func tcpImageBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	var files int
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasPrefix(d.Name(), "tcp-stream-") {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
			files++
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 1, files, "one connected TCP socket in checkpoint %s", dir)
	return n
}

// TestTCPInFlightCheckpoint: a TCP stream between two jobs' pods survives
// leave-running checkpoints of both ends and a stop-checkpoint and restart
// of the client (whose address the stopped job keeps), with every byte
// checked by the server.
func TestTCPInFlightCheckpoint(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	p := startTCPPair(t, a, u, dir)

	leaveRunningCheckpoints(t, a, u, p, 3)
	checkpointBothAtOnce(t, a, u, p)

	stillStreaming(t, p.srv, "the client's stop-checkpoint")
	t.Logf("server at the client's stop: %s", lastLine(p.srv.stdout.String()))
	awaitQueued(t, a, u, "cli", false, 1<<20)
	ck := checkpointJSON(t, a, u, "cli", true)
	stopID := ck.ID
	queued := tcpImageBytes(t, ck.Dir)
	t.Logf("client's TCP image at its stop-checkpoint %s: %d bytes", stopID, queued)
	assert.Greater(t, queued, int64(64<<10), "the client's send queue held bytes when it was stopped")
	first := p.cli.wait(t, 30*time.Second)
	require.Equal(t, 75, first.Code, "cruz run of the stopped client exits 75; stderr:\n%s", first.Stderr)
	assert.Contains(t, first.Stderr, stopID)
	assert.Equal(t, api.StateStopped, a.status(u, "cli").State)
	// The server keeps its end; its retransmissions meet no pod at the
	// client's address for a while.
	time.Sleep(time.Second)
	assert.Equal(t, api.StateRunning, a.status(u, "srv").State, "the server runs on while the client is stopped")

	second := a.startCruz(u, dir, "restart", "cli").wait(t, 60*time.Second)
	require.Equal(t, 0, second.Code, "restarted client; stdout:\n%s\nstderr:\n%s\nserver so far:\n%s\n%s",
		second.Stdout, second.Stderr, tail(p.srv.stdout.String(), 5), p.srv.stderr.String())
	srvRes := p.srv.wait(t, 60*time.Second)
	t.Logf("server: status %d\nstdout:\n%s\nstderr:\n%s", srvRes.Code, tail(srvRes.Stdout, 5), srvRes.Stderr)
	t.Logf("client: run stdout %q stderr %q; restart status %d stdout %q stderr %q",
		first.Stdout, first.Stderr, second.Code, second.Stdout, second.Stderr)

	cliLines := append(check.NonEmptyLines(first.Stdout), check.NonEmptyLines(second.Stdout)...)
	assert.Equal(t, []string{fmt.Sprintf("client ok %d bytes", tcpTotal)}, cliLines,
		"the client's run and restart print one line, once")
	assert.Empty(t, duplicateLines(cliLines))
	assert.Equal(t, 0, srvRes.Code, "server; stderr:\n%s", srvRes.Stderr)
	assert.Equal(t, recvLines(), check.NonEmptyLines(srvRes.Stdout), "the server received and checked every byte, once")

	assert.Equal(t, api.StateExited, awaitJobState(a, u, "cli", 10*time.Second, api.StateExited).State)
	assert.Equal(t, api.StateExited, awaitJobState(a, u, "srv", 10*time.Second, api.StateExited).State)
	a.requireNoLeaks()
}

// TestTCPServerStopRestart: the same stream survives the server being
// stopped by a checkpoint (with a full receive queue) and restarted while
// the client keeps sending; the server's output across its run and restart
// is every MiB once and the final count.
func TestTCPServerStopRestart(t *testing.T) {
	a := startAgent(t, agentOptions{})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	p := startTCPPair(t, a, u, dir)

	leaveRunningCheckpoints(t, a, u, p, 1)

	stillStreaming(t, p.srv, "the server's stop-checkpoint")
	t.Logf("server at its stop: %s", lastLine(p.srv.stdout.String()))
	awaitQueued(t, a, u, "srv", true, 1<<20)
	ck := checkpointJSON(t, a, u, "srv", true)
	stopID := ck.ID
	queued := tcpImageBytes(t, ck.Dir)
	t.Logf("server's TCP image at its stop-checkpoint %s: %d bytes", stopID, queued)
	assert.Greater(t, queued, int64(64<<10), "the server's receive queue held bytes when it was stopped")
	first := p.srv.wait(t, 30*time.Second)
	require.Equal(t, 75, first.Code, "cruz run of the stopped server exits 75; stderr:\n%s", first.Stderr)
	assert.Contains(t, first.Stderr, stopID)
	assert.Equal(t, api.StateStopped, a.status(u, "srv").State)
	time.Sleep(time.Second)
	assert.Equal(t, api.StateRunning, a.status(u, "cli").State, "the client runs on while the server is stopped")

	second := a.startCruz(u, dir, "restart", "srv").wait(t, 60*time.Second)
	require.Equal(t, 0, second.Code, "restarted server; stdout:\n%s\nstderr:\n%s\nclient so far:\n%s\n%s",
		second.Stdout, second.Stderr, p.cli.stdout.String(), p.cli.stderr.String())
	cliRes := p.cli.wait(t, 60*time.Second)
	t.Logf("server: run stdout tail:\n%s\nrestart status %d stdout:\n%s\nstderr:\n%s",
		tail(first.Stdout, 3), second.Code, second.Stdout, second.Stderr)
	t.Logf("client: status %d stdout %q stderr %q", cliRes.Code, cliRes.Stdout, cliRes.Stderr)

	srvLines := append(check.NonEmptyLines(first.Stdout), check.NonEmptyLines(second.Stdout)...)
	assert.Empty(t, duplicateLines(srvLines), "no server line printed twice")
	assert.Equal(t, recvLines(), srvLines, "the server's run and restart together checked every byte, once")
	assert.True(t, strings.HasSuffix(first.Stdout, "\n") || first.Stdout == "", "the stopped run ends with a whole line")
	assert.Equal(t, 0, cliRes.Code, "client; stderr:\n%s", cliRes.Stderr)
	assert.Equal(t, fmt.Sprintf("client ok %d bytes\n", tcpTotal), cliRes.Stdout)

	assert.Equal(t, api.StateExited, awaitJobState(a, u, "cli", 10*time.Second, api.StateExited).State)
	assert.Equal(t, api.StateExited, awaitJobState(a, u, "srv", 10*time.Second, api.StateExited).State)
	a.requireNoLeaks()
}
