package mpi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ortedCommand is what Open MPI 4.1.4's mpirun passed its remote shell
// (after the host), seen on Debian 12.
const ortedCommand = ` orted --daemonize -mca ess "env" -mca ess_base_jobid "1389232128" -mca ess_base_vpid 1 -mca ess_base_num_procs "3" -mca orte_node_regex "vm,[2:10].9.9.1,[2:10].9.9.2@0(3)" -mca orte_hnp_uri "1389232128.0;tcp://192.0.2.2:60873;tcp6://[fd00::2]:42241" --mca plm_rsh_agent "/opt/cruz/bin/cruzd __cruz-rsh-agent" --mca plm_rsh_no_tree_spawn "1" -mca plm "rsh" -mca pmix "^s1,s2,cray,isolated"`

func launchLine(t *testing.T, host, cmd string) string {
	b, err := json.Marshal(ortedLaunch{Host: host, Command: strings.TrimSpace(cmd)})
	require.NoError(t, err)
	return ortedLaunchPrefix + string(b) + "\n"
}

func TestOrtedArgv(t *testing.T) {
	argv, err := ortedArgv(strings.TrimSpace(ortedCommand))
	require.NoError(t, err)
	assert.Equal(t, "orted", argv[0])
	assert.NotContains(t, argv, "--daemonize", "orted must stay the pod's PID 1")
	assert.Contains(t, argv, "1389232128.0;tcp://192.0.2.2:60873;tcp6://[fd00::2]:42241", "quotes removed as a shell would")
	assert.Contains(t, argv, "/opt/cruz/bin/cruzd __cruz-rsh-agent")
	argv, err = ortedArgv(`PATH=/opt/ompi/bin:$PATH ; export PATH ; /opt/ompi/bin/orted --daemonize -mca ess "env"`)
	require.NoError(t, err)
	assert.Equal(t, []string{"/bin/sh", "-c", `PATH=/opt/ompi/bin:$PATH ; export PATH ; /opt/ompi/bin/orted -mca ess "env"`}, argv)
	_, err = ortedArgv(`orted "unterminated`)
	require.ErrorContains(t, err, "unterminated quote")
}

func TestOpenMPILaunchGate(t *testing.T) {
	o := ORTE{Mpirun: "mpirun.openmpi", Agent: "/x/cruzd"}
	var out []string
	g := NewLaunchGate(o, testHosts, func(data []byte) { out = append(out, string(data)) })
	text := "a warning\n" + launchLine(t, "10.0.0.4", ortedCommand) + launchLine(t, "10.0.0.3", ortedCommand) + "rank output\n"
	for i := 0; i < len(text); i += 5 {
		g.Write([]byte(text[i:min(i+5, len(text))]))
	}
	res := <-g.Result()
	require.NoError(t, res.Err)
	require.Len(t, res.Launches, 2)
	assert.Equal(t, 1, res.Launches[0].ID, "the daemon for 10.0.0.4 goes to the second pod")
	assert.Equal(t, 0, res.Launches[1].ID)
	assert.Equal(t, "a warning\nrank output\n", strings.Join(out, ""))
}

func TestOpenMPILaunchErrors(t *testing.T) {
	o := ORTE{Mpirun: "mpirun.openmpi"}
	for _, tc := range []struct{ name, in, want string }{
		{"eof", "mpirun: no such file\n", "ended after asking for 0 of 2 daemons"},
		{"host", launchLine(t, "10.9.9.9", ortedCommand), `daemon on "10.9.9.9"`},
		{"dup", launchLine(t, "10.0.0.3", ortedCommand) + launchLine(t, "10.0.0.3", ortedCommand), `daemon on "10.0.0.3"`},
		{"json", ortedLaunchPrefix + "{\n", "bad daemon launch line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ReadLaunches(o, bufioReader(tc.in), testHosts)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestOpenMPIArgvAndEnv(t *testing.T) {
	o := ORTE{Mpirun: "mpirun.openmpi", Vars: []string{"OMPI_MCA_btl=tcp,self"}, Agent: "/opt/cruz/bin/cruzd"}
	assert.Equal(t, []string{"mpirun.openmpi", "--host", "10.0.0.3,10.0.0.4", "-np", "2", "lmp", "-in", "in.melt"},
		o.Argv(testHosts, 2, []string{"lmp", "-in", "in.melt"}))
	env := o.Env(1001)
	assert.Contains(t, env, "OMPI_MCA_btl=tcp,self")
	assert.Contains(t, env, "OMPI_MCA_plm_rsh_agent=/opt/cruz/bin/cruzd __cruz-rsh-agent")
	assert.Contains(t, env, "OMPI_MCA_plm=rsh", "never Slurm's launcher, also in an srun --cruz step")
	assert.Contains(t, env, "OMPI_MCA_ras=^slurm", "never Slurm's allocation: the pods are the hosts")
	assert.NotContains(t, env, "OMPI_ALLOW_RUN_AS_ROOT=1", "only root's jobs need it")
	assert.Contains(t, o.Env(0), "OMPI_ALLOW_RUN_AS_ROOT=1")
}

// TestRshAgent runs the test binary as mpirun would run cruzd: the line it
// prints is the one the gate reads.
func TestRshAgent(t *testing.T) {
	if os.Getenv("CRUZ_TEST_RSH") == "1" {
		os.Exit(RshAgent(append([]string{"cruzd", RshAgentArg}, strings.Fields(os.Getenv("CRUZ_TEST_RSH_ARGS"))...)))
	}
	run := func(args string) (string, int) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRshAgent$")
		cmd.Env = append(os.Environ(), "CRUZ_TEST_RSH=1", "CRUZ_TEST_RSH_ARGS="+args)
		var stdout bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, io.Discard
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return stdout.String(), code
	}
	out, code := run("10.0.0.4 orted --daemonize -mca ess env")
	require.Equal(t, 0, code)
	ls, _, err := ReadLaunches(ORTE{}, bufioReader(out), []string{"10.0.0.4"})
	require.NoError(t, err, out)
	assert.Equal(t, []ProxyLaunch{{ID: 0, Argv: []string{"orted", "-mca", "ess", "env"}}}, ls)
	_, code = run("10.0.0.4")
	assert.Equal(t, 255, code, "no command: refused like ssh")
}

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		path string
		want Kind
	}{{"/usr/bin/lmp", OpenMPI}, {"/usr/bin/NPmpich2", MPICH}} {
		if _, err := os.Stat(tc.path); err != nil {
			continue // the test command installs them; a developer machine may not
		}
		k, err := Detect(tc.path, nil)
		require.NoError(t, err, tc.path)
		assert.Equal(t, tc.want, k, tc.path)
	}
	_, err := Detect("/bin/true", nil)
	require.ErrorIs(t, err, ErrNoMPI)
	script := filepath.Join(t.TempDir(), "s.py")
	require.NoError(t, os.WriteFile(script, []byte("#!/usr/bin/python3\n"), 0o755))
	_, err = Detect(script, nil)
	require.ErrorIs(t, err, ErrNoMPI)
	assert.Contains(t, err.Error(), "not an ELF program")
	_, err = Detect(filepath.Join(t.TempDir(), "missing"), nil)
	require.Error(t, err)
	assert.NotErrorIs(t, err, ErrNoMPI)
}

func TestParseKind(t *testing.T) {
	for in, want := range map[string]Kind{"": Auto, "auto": Auto, "MPICH": MPICH, "openmpi": OpenMPI, "ompi": OpenMPI} {
		k, err := ParseKind(in)
		require.NoError(t, err)
		assert.Equal(t, want, k)
	}
	_, err := ParseKind("intel")
	require.ErrorContains(t, err, "give auto, mpich or openmpi")
}

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }

func TestChoose(t *testing.T) {
	env := []string{"PATH=/usr/bin:/bin"}
	k, err := Choose(MPICH, "python3", env, "/")
	require.NoError(t, err)
	assert.Equal(t, MPICH, k, "an interpreter: the MPI asked for")
	_, err = Choose(Auto, "true", env, "/")
	require.ErrorContains(t, err, "links no MPI library")
	require.ErrorContains(t, err, "--np 1")
	_, err = Choose(Auto, "no-such-program-here", env, "/")
	require.ErrorContains(t, err, "give --mpi")
	if _, err := os.Stat("/usr/bin/lmp"); err == nil {
		k, err = Choose(Auto, "lmp", env, "/")
		require.NoError(t, err)
		assert.Equal(t, OpenMPI, k)
		_, err = Choose(MPICH, "lmp", env, "/")
		require.ErrorContains(t, err, "links libmpi.so.40 (Open MPI), not MPICH")
	}
}
