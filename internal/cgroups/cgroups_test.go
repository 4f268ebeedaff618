//go:build linux

package cgroups

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseMountinfo(t *testing.T) {
	const info = `30 22 0:27 / /sys/fs/cgroup rw,relatime shared:5 - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:6 - cgroup cgroup rw,cpu,cpuacct
34 30 0:31 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
35 30 0:31 /cruz-slurm-1/node1 /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 30 0:36 / /sys/fs/cgroup/my\040systemd rw,relatime shared:14 - cgroup cgroup rw,name=systemd
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime shared:15 - cgroup2 cgroup2 rw
`
	m, err := parseMountinfo(strings.NewReader(info))
	require.NoError(t, err)
	assert.Equal(t, "/sys/fs/cgroup/cpu,cpuacct", m["cpu"])
	assert.Equal(t, "/sys/fs/cgroup/cpu,cpuacct", m["cpuacct"], "co-mounted controllers share the mount")
	assert.Equal(t, "/sys/fs/cgroup/memory", m["memory"], "a bind mount of a cgroup below the root is not the hierarchy")
	assert.Equal(t, "/sys/fs/cgroup/my systemd", m["name=systemd"])
	assert.NotContains(t, m, "cpuset")
	assert.Len(t, m, 4, "%v", m)
}

func TestStepPath(t *testing.T) {
	assert.Equal(t, "/slurm/uid_1001/job_5/step_0", StepPath("/slurm", 1001, 5, 0))
	assert.Equal(t, "/a/slurm/uid_7/job_8/step_9", StepPath("/a/slurm/", 7, 8, 9))
}

// SlurmStep finds a step's cgroups in the hierarchies where it has one,
// and only there; Join moves a process in; RemoveStep removes them once
// they are empty. Needs root and a v1 memory hierarchy.
func TestSlurmStepJoinRemove(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP: needs root")
	}
	mounts, err := Mounts()
	require.NoError(t, err)
	mem, ok := mounts["memory"]
	if !ok {
		t.Skip("SKIP: no cgroup v1 memory hierarchy")
	}
	root := fmt.Sprintf("/cruz-test-%d/slurm", os.Getpid())
	step := StepPath(root, 1001, 5, 0)
	require.NoError(t, os.MkdirAll(filepath.Join(mem, step), 0o755))
	t.Cleanup(func() {
		for p := step; p != "/"; p = filepath.Dir(p) {
			_ = os.Remove(filepath.Join(mem, p))
		}
	})
	set, complete, err := SlurmStep([]string{"/nonexistent-cruz", root}, 1001, 5, 0)
	require.NoError(t, err)
	assert.Equal(t, Set{"memory": step}, set, "only the memory hierarchy has the step")
	assert.True(t, complete, "Slurm makes cgroups in no other hierarchy")
	none, complete, err := SlurmStep([]string{root}, 1001, 5, 1)
	require.NoError(t, err)
	assert.Empty(t, none, "no such step")
	assert.False(t, complete, "a step not set up yet")
	none, complete, err = SlurmStep([]string{"/nonexistent-cruz"}, 1001, 5, 0)
	require.NoError(t, err)
	assert.Empty(t, none)
	assert.True(t, complete, "no task/cgroup on this node: nothing to wait for")

	// A directory that is no cgroup is refused, whatever its name.
	err = writeProcs(t.TempDir(), "0")
	require.ErrorContains(t, err, "is not on a cgroup v1 file system")

	RemoveStep(set)
	assert.NoDirExists(t, filepath.Join(mem, step), "an empty step cgroup is removed")
}
