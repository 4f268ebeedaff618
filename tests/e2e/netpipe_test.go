package e2e

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// npLine is one line of NetPIPE's report: "  0:  1 bytes  7285 times -->
// 0.57 Mbps in  13.30 usec".
var npLine = regexp.MustCompile(`(?m)^\s*\d+:\s+(\d+) bytes\s+\d+ times -->\s+([0-9.]+) Mbps in\s+([0-9.]+) usec`)

// netpipeFigures are the latency of NetPIPE's smallest message (one byte)
// and its highest bandwidth over all sizes.
func netpipeFigures(out string) (latencyUS, peakMbps float64, lines int) {
	for _, m := range npLine.FindAllStringSubmatch(out, -1) {
		size, _ := strconv.Atoi(m[1])
		mbps, _ := strconv.ParseFloat(m[2], 64)
		us, _ := strconv.ParseFloat(m[3], 64)
		if size == 1 {
			latencyUS = us
		}
		peakMbps = max(peakMbps, mbps)
		lines++
	}
	return latencyUS, peakMbps, lines
}

// TestNetPIPE is a measurement, not part of the suite (CRUZ_NETPIPE=1;
// make bench-netpipe): what --ranks-per-pod buys (issue 13.5). NetPIPE's
// MPICH build (NPmpich2, from Debian's netpipe-mpich2) between two ranks
// in one pod (shared memory), in two pods on one node (TCP between pods
// over the node's bridge) and on two nodes of a virtual cluster (TCP over
// the LAN bridge), each run once, in one run of the test: latency of a
// one-byte message and peak bandwidth, and their ratios to the one-pod run.
func TestNetPIPE(t *testing.T) {
	if os.Getenv("CRUZ_NETPIPE") == "" {
		t.Skip("a measurement, not part of the suite: set CRUZ_NETPIPE=1 (make bench-netpipe)")
	}
	np := requireProgram(t, "NPmpich2", "netpipe-mpich2")
	_, _, n1, u, dir := clusterSetup(t, 2)
	type layout struct {
		name string
		args []string
	}
	layouts := []layout{
		{"one pod", []string{"--ranks-per-pod", "2", "--nodes", "node1"}},
		{"two pods, one node", []string{"--nodes", "node1"}},
		{"two nodes", []string{"--nodes", "node1,node2"}},
	}
	type figures struct{ lat, bw float64 }
	var got []figures
	for i, l := range layouts {
		args := append([]string{"run", "--name", fmt.Sprintf("np%d", i), "--np", "2", "--interval", "off", "--mpi", "mpich"}, l.args...)
		args = append(args, "--", np, "-u", "8388608")
		r := n1.startCruz(u, dir, args...).wait(t, 5*time.Minute)
		require.Equal(t, 0, r.Code, "%s: NetPIPE failed; stderr:\n%s", l.name, tail(r.Stderr, 20))
		lat, bw, n := netpipeFigures(r.Stdout + r.Stderr)
		require.Positive(t, n, "%s: no NetPIPE lines in:\n%s\n%s", l.name, tail(r.Stdout, 20), tail(r.Stderr, 20))
		got = append(got, figures{lat, bw})
	}
	t.Logf("NetPIPE (NPmpich2 -u 8388608), two ranks, one run each:")
	t.Logf("%-20s %12s %14s %10s %10s", "layout", "latency us", "peak Gbit/s", "lat/pod", "bw/pod")
	for i, l := range layouts {
		t.Logf("%-20s %12.2f %14.2f %10.2f %10.2f", l.name, got[i].lat, got[i].bw/1000, got[i].lat/got[0].lat, got[i].bw/got[0].bw)
	}
}
