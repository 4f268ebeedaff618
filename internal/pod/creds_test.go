package pod

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cruz-hpc/cruz/internal/api"
)

func TestCheckImageCreds(t *testing.T) {
	const images = "../criu/testdata/sleep-1001" // sleep dumped as uid 1001
	require.NoError(t, CheckImageCreds(images, Spec{Name: "j-main", UID: 1001, GID: 1001}))
	err := CheckImageCreds(images, Spec{Name: "j-main", UID: 1002, GID: 1001})
	require.ErrorIs(t, err, api.ErrForbidden)
	assert.EqualError(t, err, `pod j-main: image core-16175.img (task "sleep") records other credentials than the job's owner (uid 1002 gid 1001): `+
		"real uid is 1001, not 1002; effective uid is 1001, not 1002; saved uid is 1001, not 1002; file system uid is 1001, not 1002; "+
		"Cruz restores only the owner's identity, without capabilities")
	err = CheckImageCreds(t.TempDir(), Spec{Name: "j-main", UID: 1001, GID: 1001})
	require.ErrorIs(t, err, api.ErrInvalid)
	assert.ErrorContains(t, err, "holds no task images")
}

// A live process tree: a shell and its child, run as this test's user,
// passes for that user and is refused, naming the process, for another.
func TestCheckCredsOfLiveTree(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", "sleep 30 & wait")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// Wait for the child to exist: the check covers descendants.
	require.Eventually(t, func() bool { return len(treePids(cmd.Process.Pid)) == 2 }, 5e9, 1e7)
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	p := &Pod{Spec: Spec{Name: "j-main", UID: uid, GID: gid, Groups: groupsOf(t)}, PID: cmd.Process.Pid}
	if uid != 0 {
		require.NoError(t, p.CheckCreds())
	}
	p.Spec.UID = uid + 1
	err := p.CheckCreds()
	require.ErrorIs(t, err, api.ErrForbidden)
	sh, err2 := filepath.EvalSymlinks("/bin/sh")
	require.NoError(t, err2)
	assert.Contains(t, err.Error(), fmt.Sprintf("pod j-main: process %d (sh, %s) runs with other credentials than the job's owner (uid %d gid %d): real uid is %d, not %d",
		cmd.Process.Pid, sh, uid+1, gid, uid, uid+1))
}

func groupsOf(t *testing.T) []uint32 {
	gs, err := os.Getgroups()
	require.NoError(t, err)
	out := make([]uint32, len(gs))
	for i, g := range gs {
		out[i] = uint32(g)
	}
	return out
}
