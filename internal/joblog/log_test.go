package joblog

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/stretchr/testify/require"
)

func openLog(t *testing.T) *Log {
	t.Helper()
	l, err := Open(filepath.Join(t.TempDir(), "output"), uint32(os.Getuid()))
	require.NoError(t, err)
	t.Cleanup(l.Close)
	return l
}

// frames reads back the whole log.
func frames(t *testing.T, path string) []api.Frame {
	t.Helper()
	var out []api.Frame
	require.NoError(t, EachFrame(path, 0, -1, func(f api.Frame) error { out = append(out, f); return nil }))
	return out
}

// At its bound the log takes no more output: the frame that would pass it
// and all output after it are dropped, one notice goes to stderr, the
// callback runs once, and the frame that ends the run is still logged.
// Reopened (a restart), it tells again.
func TestLogLimit(t *testing.T) {
	l := openLog(t)
	const limit = 64 << 10
	var told []int64
	l.SetLimit(limit, func(n int64) { told = append(told, n) })
	line := bytes.Repeat([]byte("x"), 1000)
	line[len(line)-1] = '\n'
	var logged int
	for range 200 { // ~270 KB of frames: four times the bound
		l.Append(api.Frame{Stream: "stdout", Data: line})
	}
	l.Append(api.Frame{Stream: "stderr", Data: []byte("late\n")})
	l.Append(api.Frame{Exit: &api.ExitInfo{Code: 3}})
	require.Equal(t, []int64{limit}, told)
	fs := frames(t, l.Path())
	for _, f := range fs[:len(fs)-3] {
		require.Equal(t, "stdout", f.Stream)
		require.Equal(t, line, f.Data)
		logged++
	}
	require.Greater(t, logged, 40)
	// The log fills up to the bound: the start of the frame that passes it.
	head := fs[len(fs)-3]
	require.Equal(t, "stdout", head.Stream)
	require.NotEmpty(t, head.Data)
	require.Equal(t, line[:len(head.Data)], head.Data)
	require.Equal(t, api.Frame{Stream: "stderr", Data: []byte(LimitNotice(limit))}, fs[len(fs)-2])
	require.Equal(t, 3, fs[len(fs)-1].Exit.Code)
	st, err := os.Stat(l.Path())
	require.NoError(t, err)
	require.Less(t, st.Size(), int64(limit+1024), "the log stays at its bound, give or take the notice and the end frame")
	require.Greater(t, st.Size(), int64(limit), "the log fills up to its bound")
	require.Contains(t, LimitNotice(limit), "output.max_log_bytes")

	// A restart's log (full already): the new run's client is told too.
	l.Close()
	l2, err := Open(l.Path(), uint32(os.Getuid()))
	require.NoError(t, err)
	defer l2.Close()
	from := l2.Offset()
	l2.SetLimit(limit, func(n int64) { told = append(told, n) })
	l2.Append(api.Frame{Stream: "stdout", Data: []byte("new run\n")})
	for range 5 {
		l2.Append(api.Frame{Stream: "stdout", Data: line})
	}
	require.Equal(t, []int64{limit, limit}, told)
	var got []string
	require.NoError(t, EachFrame(l2.Path(), from, -1, func(f api.Frame) error { got = append(got, f.Stream+":"+string(f.Data)); return nil }))
	require.Equal(t, []string{"stderr:" + LimitNotice(limit)}, got)
}

// Without a limit nothing is dropped.
func TestLogNoLimit(t *testing.T) {
	l := openLog(t)
	for range 100 {
		l.Append(api.Frame{Stream: "stdout", Data: bytes.Repeat([]byte("y"), 1000)})
	}
	require.Len(t, frames(t, l.Path()), 100)
}

// EachFrame streams frames of any length (longer than its buffer), stops at
// the caller's error and at offset to, and skips a partial last frame.
func TestEachFrame(t *testing.T) {
	l := openLog(t)
	big := bytes.Repeat([]byte("z"), 300<<10)
	l.Append(api.Frame{Stream: "stdout", Data: []byte("a\n")})
	l.Append(api.Frame{Stream: "stderr", Data: big})
	mid := l.Offset()
	l.Append(api.Frame{Stream: "stdout", Data: []byte("b\n")})
	fs := frames(t, l.Path())
	require.Len(t, fs, 3)
	require.Equal(t, big, fs[1].Data)

	var n int
	require.NoError(t, EachFrame(l.Path(), 0, mid, func(api.Frame) error { n++; return nil }))
	require.Equal(t, 2, n)

	stop := errors.New("stop")
	n = 0
	require.ErrorIs(t, EachFrame(l.Path(), 0, -1, func(api.Frame) error { n++; return stop }), stop)
	require.Equal(t, 1, n)

	f, err := os.OpenFile(l.Path(), os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.WriteString(`{"stream":"stdout","da`)
	require.NoError(t, err)
	f.Close()
	require.Len(t, frames(t, l.Path()), 3, "a frame being written is not read")
}

// DedupSince builds the rollback filter from the log's stdout after an
// offset, as NewLineDedup does from the same bytes.
func TestDedupSince(t *testing.T) {
	l := openLog(t)
	l.Append(api.Frame{Stream: "stdout", Data: []byte("before the cut\n")})
	cut := l.Offset()
	l.Append(api.Frame{Stream: "stdout", Data: []byte("i1\ni")})
	l.Append(api.Frame{Stream: "stderr", Data: []byte("noise\n")})
	l.Append(api.Frame{Stream: "stdout", Data: []byte("2\ni3\n")})
	l.Append(api.Frame{Error: "rank 1 died"})
	d, err := DedupSince(l.Path(), cut)
	require.NoError(t, err)
	require.NotNil(t, d)
	var out strings.Builder
	out.Write(d.Feed([]byte("i1\ni2\ni3\ni4\n")))
	require.Equal(t, "i4\n", out.String())
	n, ok := d.Decided()
	require.True(t, ok)
	require.Equal(t, 3, n)

	d, err = DedupSince(l.Path(), l.Offset())
	require.NoError(t, err)
	require.Nil(t, d, "nothing after the cut: no filter")
	d, err = DedupSince(filepath.Join(t.TempDir(), "none"), 0)
	require.NoError(t, err)
	require.Nil(t, d, "no log: no filter")
}
