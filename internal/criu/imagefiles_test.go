package criu

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestImageFilesOfRealDump(t *testing.T) {
	uses, err := ImageFiles(sleepImages)
	require.NoError(t, err)
	got := map[string]FileUse{}
	for _, u := range uses {
		got[u.Path] = u
	}
	assert.Equal(t, FileUse{Path: "/usr/bin/sleep", Flags: 0, Exec: true, Why: "executable"}, got["/usr/bin/sleep"])
	assert.Equal(t, "mapped file", got["/usr/lib/x86_64-linux-gnu/libc.so.6"].Why)
	assert.Equal(t, FileUse{Path: "/tmp/privs-img", Dir: true, Why: "working directory"}, got["/tmp/privs-img"])
	assert.Equal(t, FileUse{Path: "/", Dir: true, Why: "root directory"}, got["/"])
	// stdin, stdout, stderr: /dev/null, read and written.
	assert.Equal(t, "open file", got["/dev/null"].Why)
	assert.Len(t, uses, 21, "every REG entry but none other: %v", uses)
}

func TestWiden(t *testing.T) {
	assert.Equal(t, unix.O_RDONLY, widen(unix.O_RDONLY, unix.O_RDONLY))
	assert.Equal(t, unix.O_RDWR, widen(unix.O_RDONLY, unix.O_WRONLY))
	assert.Equal(t, unix.O_WRONLY|unix.O_APPEND, widen(unix.O_WRONLY|unix.O_APPEND, unix.O_WRONLY))
	assert.Equal(t, unix.O_RDWR|unix.O_APPEND, widen(unix.O_RDWR, unix.O_WRONLY|unix.O_APPEND))
}
