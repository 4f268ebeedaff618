package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/cluster"
	"github.com/cruz-hpc/cruz/internal/slurmcluster"
	"github.com/cruz-hpc/cruz/tests/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// requireSlurm skips the test, saying why, unless Slurm's daemons, munge
// and Slurm's clients are installed.
func requireSlurm(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
	if err := slurmcluster.CheckPrograms(); err != nil {
		t.Skipf("SKIP: cruz cluster up --slurm cannot run here: %v", err)
	}
	for _, p := range []string{"srun", "sbatch"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("SKIP: no %s on PATH: apt-get install -y slurm-client", p)
		}
	}
}

// slurmSubnet is the test clusters' subnet: the LAN bridge gets an address
// in it, so it stays clear of the other tests' clusters (10.190/16 and up)
// and of internal/slurmcluster's tests (10.213/16).
func slurmSubnet() string { return fmt.Sprintf("10.%d.0.0/16", 170+os.Getpid()%15) }

// upSlurmCluster is upCluster with --slurm: a virtual cluster of n nodes with
// a Slurm cluster over them, removed when the test ends. It returns what
// `cruz cluster up` printed.
func upSlurmCluster(t *testing.T, n int) (*vcluster, string) {
	t.Helper()
	requireSlurm(t)
	criu := testenv.RequireCRIU(t)
	testenv.Bin(t, "cruzd")
	dir, err := os.MkdirTemp("/tmp", "cruz-cl-")
	require.NoError(t, err)
	c := &vcluster{t: t, dir: dir, lan: fmt.Sprintf("czs%d", os.Getpid()%100000),
		subnet: slurmSubnet(), store: filepath.Join(dir, "store"),
		path: filepath.Dir(criu) + ":" + os.Getenv("PATH")}
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{"slurmctld.log", "slurmd-node1.log", "munged.log"} {
				if b, err := os.ReadFile(filepath.Join(dir, cluster.SlurmDirName, "log", f)); err == nil {
					t.Logf("%s:\n%s", f, tail(string(b), 40))
				}
			}
			for k := 1; k <= n; k++ {
				b, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("node%d", k), "cruzd.log"))
				t.Logf("node%d's agent log:\n%s", k, tail(string(b), 40))
			}
		}
		r := c.clusterCmd("down", "--lan", c.lan, "--purge")
		if r.Code != 0 {
			t.Errorf("cruz cluster down at cleanup: %s", r.Stderr)
		}
		_ = os.RemoveAll(dir)
	})
	r := c.clusterCmd("up", "--slurm", "--nodes", fmt.Sprint(n), "--lan", c.lan, "--subnet", c.subnet, "--store", c.store)
	require.Equal(t, 0, r.Code, "cruz cluster up --slurm; stdout:\n%s\nstderr:\n%s", r.Stdout, r.Stderr)
	return c, r.Stdout
}

// slurmCmd runs a Slurm client with SLURM_CONF=conf.
func slurmCmd(t *testing.T, conf string, name string, args ...string) result {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "SLURM_CONF="+conf)
	cmd.Dir = "/"
	return runCommand(t, cmd, time.Minute)
}

// sortedLines returns s's non-empty lines, trimmed and sorted.
func sortedLines(s string) []string {
	var l []string
	for _, line := range strings.Split(s, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			l = append(l, line)
		}
	}
	sort.Strings(l)
	return l
}

// slurmProcesses lists the live processes of the Slurm cluster in dir:
// Slurm's daemons, their helpers and munged, found by the files of dir that
// their command lines or environments name.
func slurmProcesses(dir string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		name := strings.TrimSpace(string(comm))
		switch name {
		case "slurmctld", "slurmd", "slurmstepd", "slurmscriptd", "munged", "nsenter", "unshare", "sh", "cruzd":
		default:
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if strings.Contains(string(cmdline), dir+"/") || strings.Contains(string(environ), "SLURM_CONF="+dir+"/") {
			out = append(out, fmt.Sprintf("%s %d", name, pid))
		}
	}
	return out
}

// TestClusterSlurm: `cruz cluster up --slurm` starts a real Slurm cluster
// over 3 virtual nodes: slurmctld at the LAN's controller address, a slurmd
// per node in the node's network namespace. Slurm's clients find it through
// `cruz cluster env`; srun and sbatch run on every node; the Cruz SPANK
// plugin gives srun --cruz, and each node's job steps see that node's own
// agent at the plugin's socket. `cruz cluster down` leaves nothing behind.
func TestClusterSlurm(t *testing.T) {
	c, upOut := upSlurmCluster(t, 3)
	st := c.status()
	require.NotNil(t, st.Slurm, "cruz cluster status --json has no slurm state; up printed:\n%s", upOut)
	ss := *st.Slurm
	ctrl := strings.TrimSuffix(c.subnet, "0/16") + "254"
	assert.Equal(t, ctrl, ss.ControllerAddr.String(), "slurmctld's address is host 254 of the subnet's first /24")
	assert.Equal(t, slurmcluster.DefaultSlurmctldPort, ss.Port)
	assert.True(t, ss.Alive, "status says slurmctld runs")
	assert.Equal(t, filepath.Join(c.dir, cluster.SlurmDirName, "slurm.conf"), ss.Conf)
	assert.Contains(t, upOut, "export SLURM_CONF="+ss.Conf)

	// The controller's address is on the LAN bridge, with the subnet's
	// prefix, and only there.
	out, err := exec.Command("ip", "-o", "-4", "addr", "show").CombinedOutput()
	require.NoError(t, err, "%s", out)
	var withCtrl []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, " "+ctrl+"/") {
			withCtrl = append(withCtrl, strings.Fields(line)[1]+" "+strings.Fields(line)[3])
		}
	}
	assert.Equal(t, []string{c.lan + " " + ctrl + "/16"}, withCtrl, "interfaces with the controller's address")

	// cruz cluster env and status.
	r := c.clusterCmd("env")
	require.Equal(t, 0, r.Code, "cruz cluster env: %s", r.Stderr)
	assert.Contains(t, r.Stdout, "export CRUZ_SOCKET="+filepath.Join(c.dir, "node1", "cruzd.sock")+"\n")
	conf := ""
	for _, line := range strings.Split(r.Stdout, "\n") {
		if v, ok := strings.CutPrefix(line, "export SLURM_CONF="); ok {
			conf = v
		}
	}
	require.Equal(t, ss.Conf, conf, "cruz cluster env printed:\n%s", r.Stdout)
	r = c.clusterCmd("status")
	require.Equal(t, 0, r.Code, "cruz cluster status: %s", r.Stderr)
	assert.Contains(t, r.Stdout, fmt.Sprintf("slurm: slurmctld at %s:%d, conf %s", ctrl, ss.Port, conf))

	// Every node is idle.
	r = slurmCmd(t, conf, "sinfo", "-h", "-o", "%D %T")
	require.Equal(t, 0, r.Code, "sinfo: %s", r.Stderr)
	assert.Equal(t, []string{"3 idle"}, sortedLines(r.Stdout), "sinfo -h -o '%%D %%T'")
	r = slurmCmd(t, conf, "sinfo", "-h", "-N", "-o", "%N %T")
	require.Equal(t, 0, r.Code, "sinfo: %s", r.Stderr)
	assert.Equal(t, []string{"node1 idle", "node2 idle", "node3 idle"}, sortedLines(r.Stdout))

	// srun runs a task on every node, each in its node's namespaces.
	r = slurmCmd(t, conf, "srun", "-N3", "hostname")
	require.Equal(t, 0, r.Code, "srun -N3 hostname: %s", r.Stderr)
	assert.Equal(t, []string{"node1", "node2", "node3"}, sortedLines(r.Stdout))

	// The Cruz SPANK plugin.
	assert.Equal(t, filepath.Join(os.Getenv("CRUZ_BIN"), cluster.SpankPlugin), ss.Plugin)
	r = slurmCmd(t, conf, "srun", "--help")
	require.Equal(t, 0, r.Code, "srun --help: %s", r.Stderr)
	assert.Contains(t, r.Stdout, "--cruz ", "srun --help lists the plugin's options")
	assert.Contains(t, r.Stdout, "--cruz-interval=")

	// Each node's job steps see that node's own agent socket at the
	// plugin's socket path; the root mount namespace sees nothing.
	sock := filepath.Join(ss.NodeDir, "cruzd.sock")
	assert.NoFileExists(t, sock)
	var want []string
	for k := 1; k <= 3; k++ {
		var s syscall.Stat_t
		require.NoError(t, syscall.Stat(filepath.Join(c.dir, fmt.Sprintf("node%d", k), "cruzd.sock"), &s))
		want = append(want, fmt.Sprintf("node%d %d 1", k, s.Ino))
	}
	r = slurmCmd(t, conf, "srun", "-N3", "sh", "-c", `echo "$(hostname) $(stat -c %i `+sock+`) 1"`)
	require.Equal(t, 0, r.Code, "srun: %s", r.Stderr)
	assert.Equal(t, want, sortedLines(r.Stdout), "per node: hostname, inode of the plugin's socket")

	// srun --cruz runs the tasks' program in pods (one per task, under
	// mpiexec), which see the plugin's settings.
	r = slurmCmd(t, conf, "srun", "--cruz", "-N3", "sh", "-c", `echo "$(hostname) $CRUZ_ENABLED"`)
	require.Equal(t, 0, r.Code, "srun --cruz: %s", r.Stderr)
	lines := sortedLines(r.Stdout)
	require.Len(t, lines, 3, "srun --cruz -N3 printed:\n%s\n%s", r.Stdout, r.Stderr)
	for k, line := range lines {
		assert.Regexp(t, fmt.Sprintf(`^slurm-[0-9]+-0-r%d 1$`, k), line, "a task's pod: its hostname and CRUZ_ENABLED")
	}
	assert.NotContains(t, r.Stderr, "no cruz agent")

	// A batch job over every node.
	jobDir := t.TempDir()
	r = slurmCmd(t, conf, "sbatch", "--wait", "-N3", "-o", filepath.Join(jobDir, "job-%j.out"), "--wrap", "srun hostname")
	require.Equal(t, 0, r.Code, "sbatch --wait: stdout %s, stderr %s", r.Stdout, r.Stderr)
	assert.Contains(t, r.Stdout, "Submitted batch job")
	outs, err := filepath.Glob(filepath.Join(jobDir, "job-*.out"))
	require.NoError(t, err)
	require.Len(t, outs, 1, "the batch job's output file")
	b, err := os.ReadFile(outs[0])
	require.NoError(t, err)
	assert.Equal(t, []string{"node1", "node2", "node3"}, sortedLines(string(b)), "the batch job's output")

	// Down removes Slurm with the rest.
	r = c.clusterCmd("down", "--lan", c.lan, "--purge")
	require.Equal(t, 0, r.Code, "cruz cluster down: %s", r.Stderr)
	assert.Empty(t, slurmProcesses(c.dir), "processes of the cluster left after down")
	out, err = exec.Command("ip", "-o", "-4", "addr", "show").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.NotContains(t, string(out), " "+ctrl+"/", "the controller's address is gone")
	links, err := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	require.NoError(t, err)
	assert.NotContains(t, string(links), " "+c.lan, "no LAN bridge or veth left")
	ents, err := os.ReadDir(c.dir)
	if err == nil {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		assert.Empty(t, names, "left in the cluster directory after down --purge")
	} else {
		assert.ErrorIs(t, err, os.ErrNotExist)
	}
}

// TestClusterSlurmUpRollsBack: when Slurm fails to start over nodes that are
// up (here: its state directory lies under a directory that munged and the
// jobs' users could not search), `cruz cluster up --slurm` says why and
// removes everything it made: the nodes, the files it wrote for Slurm, the
// controller's address and the LAN. (That Slurm's own daemons go when they
// fail half-way is internal/slurmcluster's to test.)
func TestClusterSlurmUpRollsBack(t *testing.T) {
	requireSlurm(t)
	criu := testenv.RequireCRIU(t)
	testenv.Bin(t, "cruzd")
	parent, err := os.MkdirTemp("/tmp", "cruz-cl-") // 0700
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(parent) })
	c := &vcluster{t: t, dir: filepath.Join(parent, "cl"), lan: fmt.Sprintf("czs%d", os.Getpid()%100000),
		subnet: slurmSubnet(), store: filepath.Join(parent, "store"),
		path: filepath.Dir(criu) + ":" + os.Getenv("PATH")}
	t.Cleanup(func() {
		if r := c.clusterCmd("down", "--lan", c.lan, "--purge"); r.Code != 0 {
			t.Errorf("cruz cluster down at cleanup: %s", r.Stderr)
		}
	})
	r := c.clusterCmd("up", "--slurm", "--nodes", "2", "--lan", c.lan, "--subnet", c.subnet, "--store", c.store)
	require.NotEqual(t, 0, r.Code, "cruz cluster up --slurm under a 0700 directory; stdout:\n%s", r.Stdout)
	assert.Contains(t, r.Stdout, "node2 is up", "the nodes came up before Slurm")
	assert.Contains(t, r.Stdout, "removing what it made")
	assert.Contains(t, r.Stderr, "start Slurm over the nodes")
	assert.Contains(t, r.Stderr, "is not searchable by other users")
	assert.Empty(t, slurmProcesses(c.dir), "processes of the cluster left after the failed up")
	assert.NoFileExists(t, filepath.Join(c.dir, cluster.StateFile))
	assert.NoDirExists(t, filepath.Join(c.dir, cluster.SlurmDirName))
	assert.NoDirExists(t, filepath.Join(c.dir, "this-node"))
	assert.NoFileExists(t, filepath.Join(c.dir, "slurm-plugstack.conf"))
	assert.NoDirExists(t, filepath.Join(c.dir, "node1"))
	links, err := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	require.NoError(t, err)
	assert.NotContains(t, string(links), " "+c.lan, "no LAN bridge or veth left")
}
