package mpi

import (
	"bufio"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	testHydra = Hydra{Mpiexec: "mpiexec"}
	testHosts = []string{"10.0.0.3", "10.0.0.4"}
)

const sampleLaunch = `HYDRA_LAUNCH: /usr/bin/hydra_pmi_proxy --control-port 10.203.0.2:37187 --rmk user --launcher manual --demux poll --iface eth0 --pgid 0 --retries 10 --usize -2 --pmi-port 0 --gpus-per-proc -2 --proxy-id 0 
HYDRA_LAUNCH: /usr/bin/hydra_pmi_proxy --control-port 10.203.0.2:37187 --rmk user --launcher manual --demux poll --iface eth0 --pgid 0 --retries 10 --usize -2 --pmi-port 0 --gpus-per-proc -2 --proxy-id 1 
HYDRA_LAUNCH_END
iter 1 sum 3
`

func TestReadLaunches(t *testing.T) {
	r := bufio.NewReader(strings.NewReader("[mpiexec] warning: something\n" + sampleLaunch))
	ls, other, err := ReadLaunches(testHydra, r, testHosts)
	require.NoError(t, err)
	require.Len(t, ls, 2)
	assert.Equal(t, 0, ls[0].ID)
	assert.Equal(t, 1, ls[1].ID)
	assert.Equal(t, "/usr/bin/hydra_pmi_proxy", ls[0].Argv[0])
	assert.Equal(t, "1", ls[1].Argv[len(ls[1].Argv)-1])
	assert.Equal(t, []string{"[mpiexec] warning: something"}, other)
	rest, _ := r.ReadString('\n')
	assert.Equal(t, "iter 1 sum 3\n", rest, "job output after the launch lines stays in the reader")
}

func TestReadLaunchesErrors(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"eof", "usage: mpiexec ...\n", "ended before printing"},
		{"count", "HYDRA_LAUNCH: p --proxy-id 0\nHYDRA_LAUNCH_END\n", "asked for 1 proxies"},
		{"no id", "HYDRA_LAUNCH: p --pgid 0\n", "without --proxy-id"},
		{"bad id", "HYDRA_LAUNCH: p --proxy-id x\n", "bad --proxy-id"},
		{"dup id", "HYDRA_LAUNCH: p --proxy-id 0\nHYDRA_LAUNCH: p --proxy-id 0\n", "distinct id"},
		{"range", "HYDRA_LAUNCH: p --proxy-id 5\n", "distinct id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ReadLaunches(testHydra, bufio.NewReader(strings.NewReader(tc.in)), testHosts)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestMpiexecArgv(t *testing.T) {
	got := testHydra.Argv(testHosts, 2, []string{"./app", "5"})
	assert.Equal(t, []string{"mpiexec", "-launcher", "manual", "-iface", "eth0", "-hosts", "10.0.0.3,10.0.0.4", "-n", "2", "./app", "5"}, got)
}

func TestLaunchGateSplitsLaunchLinesFromOutput(t *testing.T) {
	var out []string
	g := NewLaunchGate(testHydra, testHosts, func(data []byte) { out = append(out, string(data)) })
	// hydra's stdout arrives in arbitrary chunks.
	text := "HYDRA_LAUNCH: /usr/bin/hydra_pmi_proxy --control-port 10.0.0.2:1 --proxy-id 0\n" +
		"HYDRA_LAUNCH: /usr/bin/hydra_pmi_proxy --control-port 10.0.0.2:1 --proxy-id 1\n" +
		"HYDRA_LAUNCH_END\nstart ranks 2\n"
	for i := 0; i < len(text); i += 7 {
		end := min(i+7, len(text))
		g.Write([]byte(text[i:end]))
	}
	res := <-g.Result()
	require.NoError(t, res.Err)
	require.Len(t, res.Launches, 2)
	assert.Equal(t, 1, res.Launches[1].ID)
	g.Write([]byte("iter 1\n"))
	assert.Equal(t, "start ranks 2\niter 1\n", strings.Join(out, ""))
}

func TestLaunchGateReportsEarlyExit(t *testing.T) {
	var out []string
	g := NewLaunchGate(testHydra, testHosts, func(data []byte) { out = append(out, string(data)) })
	g.Write([]byte("[mpiexec@pod] bad option -x\n"))
	g.Write(nil) // mpiexec ended
	res := <-g.Result()
	require.Error(t, res.Err)
	assert.Contains(t, res.Err.Error(), "ended before printing")
	assert.Equal(t, []string{"[mpiexec@pod] bad option -x\n"}, out, "what mpiexec said reaches the user")
}

func TestSharedEnv(t *testing.T) {
	h := Hydra{Vars: []string{"UCX_TLS=tcp,self", "MPIR_CVAR_NOLOCAL=1"}}
	assert.Equal(t, []string{"UCX_TLS=tcp,self"}, h.Shared(h.Env(1001)), "MPICH's shared memory within the pod, UCX stays on TCP")
	o := ORTE{Vars: []string{"OMPI_MCA_btl=tcp,self", "OMPI_MCA_pml=ob1"}}
	assert.Equal(t, []string{"OMPI_MCA_btl=vader,tcp,self", "OMPI_MCA_pml=ob1"}, o.Shared(o.Vars))
	assert.Equal(t, []string{"OMPI_MCA_btl=^openib"}, o.Shared([]string{"OMPI_MCA_btl=^openib"}), "an exclusion list is left alone")
}
