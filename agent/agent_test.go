package agent

import (
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLaunchGateSplitsLaunchLinesFromOutput(t *testing.T) {
	var out []string
	g := newLaunchGate(2, func(stream string, data []byte) {
		if data != nil {
			out = append(out, stream+":"+string(data))
		}
	})
	// hydra's stdout arrives in arbitrary chunks.
	text := "HYDRA_LAUNCH: /usr/bin/hydra_pmi_proxy --control-port 10.0.0.2:1 --proxy-id 0\n" +
		"HYDRA_LAUNCH: /usr/bin/hydra_pmi_proxy --control-port 10.0.0.2:1 --proxy-id 1\n" +
		"HYDRA_LAUNCH_END\nstart ranks 2\n"
	for i := 0; i < len(text); i += 7 {
		end := min(i+7, len(text))
		g.write([]byte(text[i:end]))
	}
	res := <-g.result
	require.NoError(t, res.err)
	require.Len(t, res.launches, 2)
	assert.Equal(t, 1, res.launches[1].ID)
	g.write([]byte("iter 1\n"))
	assert.Equal(t, "start ranks 2\niter 1\n", strings.Join(trimStream(out), ""))
}

func trimStream(frames []string) []string {
	var s []string
	for _, f := range frames {
		s = append(s, strings.TrimPrefix(f, "stdout:"))
	}
	return s
}

func TestLaunchGateReportsEarlyExit(t *testing.T) {
	var out []string
	g := newLaunchGate(2, func(_ string, data []byte) { out = append(out, string(data)) })
	g.write([]byte("[mpiexec@pod] bad option -x\n"))
	g.write(nil) // mpiexec ended
	res := <-g.result
	require.Error(t, res.err)
	assert.Contains(t, res.err.Error(), "ended before printing")
	assert.Equal(t, []string{"[mpiexec@pod] bad option -x\n"}, out, "what mpiexec said reaches the user")
}

func TestErrorContextQuotesLinesAroundErrors(t *testing.T) {
	log := strings.Join([]string{
		"(00.001) start",
		"(00.002) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self",
		"(00.003) a",
		"(00.004) b",
		"(00.005) c",
		"(00.006) Error (criu/files-reg.c:1790): Can't lookup mount=24",
		"(00.007) d",
		"(00.008) e",
		"(00.009) f",
	}, "\n")
	got := errorContext(log, 1, 16)
	assert.Contains(t, got, "Can't lookup mount=24")
	assert.Contains(t, got, "(00.005) c")
	assert.Contains(t, got, "(00.007) d")
	assert.NotContains(t, got, "(00.009) f")
	assert.NotContains(t, got, "RLIMIT_NOFILE", "the harmless rlimit line is not quoted as the cause")
	// Without any error line, the end of the log is quoted.
	assert.Contains(t, errorContext("x\ny\nz", 1, 2), "z")
}

func TestValidateRun(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  api.RunRequest
		want string
	}{
		{"no command", api.RunRequest{NP: 2, Dir: "/"}, "no command given"},
		{"np zero", api.RunRequest{NP: 0, Argv: []string{"a"}, Dir: "/"}, "--np 0 is out of range"},
		{"np huge", api.RunRequest{NP: 100000, Argv: []string{"a"}, Dir: "/"}, "out of range"},
		{"plain with np", api.RunRequest{NP: 3, Plain: true, Argv: []string{"a"}, Dir: "/"}, "one pod"},
		{"bad name", api.RunRequest{NP: 1, Name: "a b", Argv: []string{"a"}, Dir: "/"}, "not valid"},
		{"relative dir", api.RunRequest{NP: 1, Argv: []string{"a"}, Dir: "x"}, "absolute"},
		{"bad env", api.RunRequest{NP: 1, Argv: []string{"a"}, Dir: "/", Env: []string{"NOEQUALS"}}, "KEY=VALUE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := validateRun(&tc.req)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	ok := api.RunRequest{Plain: true, Argv: []string{"/opt/app/solver"}, Dir: "/"}
	require.NoError(t, validateRun(&ok))
	assert.Equal(t, 1, ok.NP)
	assert.Equal(t, "solver", ok.Name, "the name defaults to the command's")
}

func TestPodIdentity(t *testing.T) {
	ip := netip.MustParseAddr("10.203.1.7")
	assert.Equal(t, "02:c2:0a:cb:01:07", podMAC(ip).String(), "the MAC follows the address, so both move with the rank")
	n := hostVethName("4f2a9c01-r12")
	assert.LessOrEqual(t, len(n), 15)
	assert.True(t, strings.HasPrefix(n, hostVethPrefix))
	assert.Equal(t, n, hostVethName("4f2a9c01-r12"))
	assert.NotEqual(t, n, hostVethName("4f2a9c01-r13"))
}

func TestTerminatesByDefault(t *testing.T) {
	assert.True(t, terminatesByDefault(syscall.SIGTERM))
	assert.True(t, terminatesByDefault(syscall.SIGINT))
	assert.False(t, terminatesByDefault(syscall.SIGCHLD))
	assert.False(t, terminatesByDefault(syscall.SIGCONT))
}

func TestVersionString(t *testing.T) {
	assert.Equal(t, "4.2.1", versionString(40201))
	assert.Equal(t, "3.17.1", versionString(31701))
}

func TestPickAddrsWholeSubnet(t *testing.T) {
	sub := netip.MustParsePrefix("10.9.0.0/29")
	used := map[netip.Addr]string{netip.MustParseAddr("10.9.0.3"): "job"}
	got := pickAddrs(sub, sub, used, 10)
	// .0 network, .1 gateway, .3 used, .7 broadcast.
	assert.Equal(t, []netip.Prefix{
		netip.MustParsePrefix("10.9.0.2/29"), netip.MustParsePrefix("10.9.0.4/29"),
		netip.MustParsePrefix("10.9.0.5/29"), netip.MustParsePrefix("10.9.0.6/29"),
	}, got)
	assert.Len(t, pickAddrs(sub, netip.Prefix{}, nil, 2), 2, "no pool means the whole subnet")
}

func TestPickAddrsPool(t *testing.T) {
	sub := netip.MustParsePrefix("10.203.0.0/16")
	pool := netip.MustParsePrefix("10.203.2.0/24")
	used := map[netip.Addr]string{netip.MustParseAddr("10.203.2.1"): "job"}
	got := pickAddrs(sub, pool, used, 3)
	assert.Equal(t, []netip.Prefix{
		netip.MustParsePrefix("10.203.2.2/16"), netip.MustParsePrefix("10.203.2.3/16"), netip.MustParsePrefix("10.203.2.4/16"),
	}, got, "addresses come from the pool and carry the subnet's prefix length")
	all := pickAddrs(sub, pool, nil, 1000)
	assert.Len(t, all, 254, "the pool's network and broadcast addresses are left out")
	assert.Equal(t, "10.203.2.254/16", all[len(all)-1].String())

	// A pool at the start of the subnet skips the subnet's gateway address.
	first := pickAddrs(sub, netip.MustParsePrefix("10.203.0.0/24"), nil, 1)
	assert.Equal(t, "10.203.0.2/16", first[0].String())
	// A pool at the end stops before the subnet's broadcast address.
	last := pickAddrs(sub, netip.MustParsePrefix("10.203.255.0/24"), nil, 1000)
	assert.Equal(t, "10.203.255.254/16", last[len(last)-1].String())
}
