package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
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

// series is one scraped line: a metric's name, labels and value.
type series struct {
	name   string
	labels map[string]string
	value  float64
}

var labelRE = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// scrapeMetrics reads url as Prometheus would, in the text format.
func scrapeMetrics(t *testing.T, url string) []series {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, resp.Header.Get("Content-Type"), "text/plain")
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var out []series
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		require.Positive(t, sp, "scraped line %q", line)
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		require.NoError(t, err, "scraped line %q", line)
		s := series{name: line[:sp], labels: map[string]string{}, value: v}
		if i := strings.IndexByte(s.name, '{'); i >= 0 {
			for _, m := range labelRE.FindAllStringSubmatch(s.name[i:], -1) {
				s.labels[m[1]] = m[2]
			}
			s.name = s.name[:i]
		}
		out = append(out, s)
	}
	return out
}

// find returns the series name{labels...} (a subset of its labels).
func find(all []series, name string, labels ...string) (float64, bool) {
next:
	for _, s := range all {
		if s.name != name {
			continue
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if s.labels[labels[i]] != labels[i+1] {
				continue next
			}
		}
		return s.value, true
	}
	return 0, false
}

func metric(t *testing.T, all []series, name string, labels ...string) float64 {
	t.Helper()
	v, ok := find(all, name, labels...)
	require.True(t, ok, "no series %s%v in the scrape", name, labels)
	return v
}

// freePort is a TCP port of 127.0.0.1 that nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestMetrics: an agent with metrics.listen serves /metrics; a job's
// checkpoint moves the node's counters and the job's own series, which
// exist while the job runs and are gone after cruz rm.
func TestMetrics(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	a := startAgent(t, agentOptions{extra: fmt.Sprintf("[metrics]\nlisten = %q\n", addr)})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	url := "http://" + addr + "/metrics"
	host, err := os.Hostname()
	require.NoError(t, err)

	before := scrapeMetrics(t, url)
	assert.Equal(t, 0.0, metric(t, before, "cruz_checkpoints_total", "result", "ok", "node", host))
	assert.Equal(t, 0.0, metric(t, before, "cruz_node_pods"))
	assert.Equal(t, 1.0, metric(t, before, "cruz_info", "node", host))
	_, ok := find(before, "cruz_job_pods")
	assert.False(t, ok, "no job, no per-job series")
	resp, err := http.Get("http://" + addr + "/")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusNotFound, resp.StatusCode, "the metrics port serves /metrics only")

	r := a.cruz(u, dir, "run", "--detach", "--plain", "--interval", "off", "--name", "met", "--", testenv.Bin(t, "counter"), "100000", "100")
	require.Equal(t, 0, r.Code, "cruz run --detach: %s", r.Stderr)
	id := strings.TrimSpace(r.Stdout)
	running := scrapeMetrics(t, url)
	assert.Equal(t, 1.0, metric(t, running, "cruz_job_pods", "job", id, "user", "cruzt1"))
	assert.Equal(t, 1.0, metric(t, running, "cruz_node_pods"))
	assert.Equal(t, 1.0, metric(t, running, "cruz_jobs", "state", "running"))
	assert.Equal(t, 0.0, metric(t, running, "cruz_job_checkpoints_total", "job", id, "result", "ok"))

	ckpt := a.checkpoint(u, id)
	r = a.cruz(u, "", "checkpoints", "--json", id)
	require.Equal(t, 0, r.Code, r.Stderr)
	var cl api.CheckpointList
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &cl), r.Stdout)
	list := cl.Checkpoints
	require.Len(t, list, 1)
	require.Equal(t, ckpt, list[0].ID)
	after := scrapeMetrics(t, url)
	assert.Equal(t, 1.0, metric(t, after, "cruz_checkpoints_total", "result", "ok"))
	assert.Equal(t, 0.0, metric(t, after, "cruz_checkpoints_total", "result", "failed"))
	assert.Equal(t, 1.0, metric(t, after, "cruz_job_checkpoints_total", "job", id, "user", "cruzt1", "result", "ok"))
	assert.Equal(t, float64(list[0].Bytes), metric(t, after, "cruz_job_last_checkpoint_bytes", "job", id),
		"the job's last checkpoint size is the one cruz checkpoints shows")
	assert.Equal(t, 1.0, metric(t, after, "cruz_checkpoint_bytes_count"))
	assert.Equal(t, float64(list[0].Bytes), metric(t, after, "cruz_checkpoint_bytes_sum"))
	for _, p := range []string{"block", "dump", "commit", "resume"} {
		assert.Equal(t, 1.0, metric(t, after, "cruz_checkpoint_phase_seconds_count", "phase", p), "phase %s", p)
	}
	held := metric(t, after, "cruz_job_last_checkpoint_traffic_held_seconds", "job", id)
	wantHeld := float64(list[0].Phases["held"]) / 1000
	assert.Equal(t, list[0].Phases["block"]+list[0].Phases["dump"]+list[0].Phases["resume"], list[0].Phases["held"])
	assert.InDelta(t, wantHeld, held, 0.0015, "traffic held = the held phase of cruz checkpoints (block + dump + resume)")
	assert.Equal(t, held, metric(t, after, "cruz_checkpoint_traffic_held_seconds_sum"))
	assert.InDelta(t, float64(time.Now().Unix()), metric(t, after, "cruz_job_last_checkpoint_timestamp_seconds", "job", id), 60)
	assert.GreaterOrEqual(t, metric(t, after, "cruz_store_bytes"), float64(list[0].Bytes), "the store holds at least the checkpoint")
	assert.Positive(t, metric(t, after, "cruz_store_free_bytes"))

	r = a.cruz(u, "", "rm", "--checkpoints", id)
	require.Equal(t, 0, r.Code, "cruz rm: %s", r.Stderr)
	gone := scrapeMetrics(t, url)
	for _, s := range gone {
		assert.NotEqual(t, id, s.labels["job"], "series %s%v of the removed job", s.name, s.labels)
	}
	assert.Equal(t, 1.0, metric(t, gone, "cruz_checkpoints_total", "result", "ok"), "the node's totals stay")
	assert.Equal(t, 0.0, metric(t, gone, "cruz_node_pods"))
	assert.Less(t, metric(t, gone, "cruz_store_bytes"), metric(t, after, "cruz_store_bytes"), "rm --checkpoints freed the store")
	a.requireNoLeaks()
}

// TestPodsCannotReachMetrics: with metrics.listen on an address pods can
// route to (the node's address on the pod bridge), the node scrapes
// /metrics there, but a process in a pod cannot connect to it, while it
// can connect to another port of the same address. The agent has no TCP
// API here: the metrics port alone is guarded.
func TestPodsCannotReachMetrics(t *testing.T) {
	port := freePort(t)
	a := startAgent(t, agentOptions{bridgeAddr: true, extra: fmt.Sprintf("[metrics]\nlisten = \"BRIDGE_ADDR:%d\"\n", port)})
	u := testenv.LookupUser(t, "cruzt1")
	dir := testenv.TempDirFor(t, u)
	metricsAddr := net.JoinHostPort(a.addr, strconv.Itoa(port))
	all := scrapeMetrics(t, "http://"+metricsAddr+"/metrics")
	metric(t, all, "cruz_node_pods")

	// Another port of the same address, which pods may reach.
	other, err := net.Listen("tcp", net.JoinHostPort(a.addr, "0"))
	require.NoError(t, err)
	defer other.Close()
	go func() {
		for {
			conn, err := other.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	otherAddr := other.Addr().(*net.TCPAddr)
	script := filepath.Join(dir, "probe.sh")
	require.NoError(t, os.WriteFile(script, []byte(fmt.Sprintf(`#!/bin/bash
for port in %d %d; do
	if timeout 3 bash -c "exec 3<>/dev/tcp/%s/$port" 2>/dev/null; then echo "$port open"; else echo "$port closed"; fi
done
`, port, otherAddr.Port, a.addr)), 0o755))
	require.NoError(t, os.Chown(script, int(u.UID), int(u.GID)))
	r := a.cruz(u, dir, "run", "--plain", "--name", "probe", "--", "/bin/bash", script)
	require.Equal(t, 0, r.Code, "stderr: %s", r.Stderr)
	assert.Equal(t, []string{
		fmt.Sprintf("%d closed", port),         // the metrics port
		fmt.Sprintf("%d open", otherAddr.Port), // another port of the node
	}, check.Lines(r.Stdout))
}
