//go:build linux

package slurmcluster

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func validOptions() Options {
	return Options{
		Dir:            "/run/cruz-slurm",
		ControllerAddr: netip.MustParseAddr("10.213.77.1"),
		Nodes: []Node{
			{Name: "n1", NetnsPID: 100, Addr: netip.MustParseAddr("10.213.77.11")},
			{Name: "n2", NetnsPID: 101, Addr: netip.MustParseAddr("10.213.77.12")},
		},
	}
}

func TestOptionsCheck(t *testing.T) {
	o := validOptions()
	require.NoError(t, o.check())
	assert.Equal(t, DefaultClusterName, o.ClusterName)
	assert.Equal(t, DefaultSlurmctldPort, o.SlurmctldPort)
	assert.Equal(t, DefaultSlurmdPort, o.SlurmdPort)
	assert.Equal(t, DefaultStartTimeout, o.StartTimeout)
	assert.Positive(t, o.CPUsPerNode)

	for _, tt := range []struct {
		mutate func(*Options)
		want   string
	}{
		{func(o *Options) { o.Dir = "rel" }, `state directory "rel" is not an absolute path`},
		{func(o *Options) { o.Dir = "/" }, `state directory "/" is not an absolute path below /`},
		{func(o *Options) { o.Dir = "/tmp/a,b" }, `state directory "/tmp/a,b" has a ','`},
		{func(o *Options) { o.Dir = "/tmp/a b" }, `has a ' '`},
		{func(o *Options) { o.Dir = "/tmp/%n" }, `has a '%'`},
		{func(o *Options) { o.Dir = "/" + strings.Repeat("d", 100) }, "is too long for the munge socket"},
		{func(o *Options) { o.ClusterName = "Cruz" }, `cluster name "Cruz" is not`},
		{func(o *Options) { o.ControllerAddr = netip.Addr{} }, "controller address"},
		{func(o *Options) { o.Nodes = nil }, "no nodes"},
		{func(o *Options) { o.Nodes[1].Name = "n1" }, `node name "n1" is used twice`},
		{func(o *Options) { o.Nodes[1].Name = "n[2]" }, `node name "n[2]" is not`},
		{func(o *Options) { o.Nodes[1].Addr = o.ControllerAddr }, "node n2: address 10.213.77.1 is already"},
		{func(o *Options) { o.Nodes[1].Addr = netip.MustParseAddr("fd00::1") }, "node n2: address \"fd00::1\" is not an IPv4 address"},
		{func(o *Options) { o.Nodes[0].NetnsPID = 0 }, "node n1: no NetnsPID"},
		{func(o *Options) { o.PlugstackConf = "plugstack.conf" }, "is not an absolute path"},
		{func(o *Options) { o.CPUsPerNode = -1 }, "CPUs per node -1"},
		{func(o *Options) { o.MemoryPerNodeMB = -5 }, "memory per node -5 MB is not positive"},
		{func(o *Options) { o.SlurmdPort = DefaultSlurmctldPort }, "both 16817"},
		{func(o *Options) { o.SlurmctldPort = 70000 }, "port 70000 is out of range"},
	} {
		o := validOptions()
		o.Nodes = append([]Node(nil), o.Nodes...)
		tt.mutate(&o)
		err := o.check()
		require.Error(t, err, "%+v", o)
		assert.Contains(t, err.Error(), tt.want)
	}
}

func TestSlurmConf(t *testing.T) {
	o := validOptions()
	o.CPUsPerNode = 4
	o.MemoryPerNodeMB = 2048
	require.NoError(t, o.check())
	conf := slurmConf(o, "head", o.Dir, "/etc/cruz/plugstack.conf")
	for _, line := range []string{
		"ClusterName=cruz\n",
		"SlurmctldHost=head(10.213.77.1)\n",
		"SlurmctldPort=16817\n",
		"SlurmdPort=16818\n",
		"AuthInfo=socket=/run/cruz-slurm/run/munge.socket.2,cred_expire=5\n",
		"SlurmdSpoolDir=/run/cruz-slurm/spool/%n\n",
		"SlurmdLogFile=/run/cruz-slurm/log/slurmd-%n.log\n",
		"PlugStackConfig=/etc/cruz/plugstack.conf\n",
		"SchedulerParameters=batch_sched_delay=0,sched_interval=1,bf_interval=1\n", "JobRequeue=1\n",
		"SlurmdParameters=config_overrides\n",
		"ReturnToService=2\n", "SlurmdTimeout=5\n",
		"NodeName=n1 NodeAddr=10.213.77.11 NodeHostname=n1 CPUs=4 Sockets=1 CoresPerSocket=4 ThreadsPerCore=1 RealMemory=2048 State=UNKNOWN\n",
		"NodeName=n2 NodeAddr=10.213.77.12 NodeHostname=n2 CPUs=4 Sockets=1 CoresPerSocket=4 ThreadsPerCore=1 RealMemory=2048 State=UNKNOWN\n",
		"PartitionName=cruz Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n",
		// Steps are confined by cgroups, which Cruz puts their pods in.
		"ProctrackType=proctrack/cgroup\n", "TaskPlugin=task/cgroup\n",
		"SelectTypeParameters=CR_Core_Memory\n", "DefMemPerCPU=512\n",
	} {
		assert.Contains(t, conf, line)
	}
}

func TestCheckTraversable(t *testing.T) {
	priv := filepath.Join(t.TempDir(), "priv")
	require.NoError(t, os.Mkdir(priv, 0o700))
	err := checkTraversable(filepath.Join(priv, "slurm"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), priv+" is not searchable by other users (mode 0700)")
	open := filepath.Join(t.TempDir(), "open")
	require.NoError(t, os.Mkdir(open, 0o755))
	require.NoError(t, os.Chmod(filepath.Dir(open), 0o755))
	require.NoError(t, os.Chmod(filepath.Dir(filepath.Dir(open)), 0o755))
	assert.NoError(t, checkTraversable(filepath.Join(open, "slurm")))
}

// TestStopDirNothing: StopDir of a directory without a cluster does nothing
// and leaves foreign files alone.
func TestStopDirNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP: StopDir needs root")
	}
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "precious"), []byte("x"), 0o644))
	require.NoError(t, StopDir(t.Context(), dir))
	assert.FileExists(t, filepath.Join(dir, "precious"))
	require.NoError(t, StopDir(t.Context(), filepath.Join(dir, "missing")))
	assert.ErrorContains(t, StopDir(t.Context(), "rel"), "not an absolute path")
}
