package launcher

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseStdOut(t *testing.T) {
	rec := "JobId=12 JobName=job.sh UserId=cruzt1(1001) StdErr=/home/u/err-12 StdIn=/dev/null StdOut=/home/u/out-12 Power="
	assert.Equal(t, "/home/u/out-12", parseStdOut(rec))
	assert.Equal(t, "/x", parseStdOut("StdOut=/x"))
	assert.Empty(t, parseStdOut("JobId=12 StdErr=/e"), "no StdOut (an interactive job)")
	assert.Empty(t, parseStdOut("StdOut=/home/u/slurm-%j.out"), "a pattern Slurm did not expand")
	assert.Empty(t, parseStdOut("StdOut=out-12"), "a relative path")
}

func TestFileBytes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "out")
	require.NoError(t, os.WriteFile(p, []byte("12345"), 0o600))
	n := fileBytes(p)
	require.NotNil(t, n)
	assert.Equal(t, int64(5), *n)
	assert.Nil(t, fileBytes(""))
	assert.Nil(t, fileBytes(filepath.Join(t.TempDir(), "none")))
	assert.Nil(t, fileBytes(t.TempDir()), "a directory")
	assert.Nil(t, fileBytes("/dev/null"), "not a regular file")
}
