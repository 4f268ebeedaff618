package criu

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testdata/writer holds images CRIU 4.2.1 dumped (less their memory pages)
// of `sleep 300 3>>/tmp/cruz-wf/app.log 4<>/tmp/cruz-wf/state.dat
// 5</tmp/cruz-wf/ro.txt </dev/null >/dev/null 2>&1`: one file appended
// to (CRIU records no size for it), one read and written (8 bytes), one only read, and
// /dev/null written.
const writerImages = "testdata/writer"

func TestWrittenFilesOfRealDump(t *testing.T) {
	got, err := WrittenFiles(writerImages)
	require.NoError(t, err)
	assert.Equal(t, []WrittenFile{
		{Path: "/tmp/cruz-wf/app.log", Size: -1, Append: true},
		{Path: "/tmp/cruz-wf/state.dat", Size: 8, Append: false},
	}, got, "the read-only file, the executable, the libraries and /dev/null are not written files")
}

func TestWrittenFilesNone(t *testing.T) {
	got, err := WrittenFiles(sleepImages)
	require.NoError(t, err)
	assert.Empty(t, got, "sleep writes only to /dev/null")
}
