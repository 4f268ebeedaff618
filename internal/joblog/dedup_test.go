package joblog

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestLineDedup(t *testing.T) {
	tests := []struct {
		name     string
		failed   string   // the failed run's stdout after the cut
		restored []string // chunks the restored run prints
		flush    bool
		want     string
		dropped  int
	}{
		{"reprints all", "a\nb\nc\n", []string{"a\nb\n", "c\nd\n"}, false, "d\n", 3},
		{"printed before freeze", "a\nb\nc\n", []string{"b\nc\nd\ne\n"}, false, "d\ne\n", 2},
		{"chunks split lines", "l1\nl2\n", []string{"l", "1\nl", "2\nl3", "\n"}, false, "l3\n", 2},
		{"no overlap", "x\ny\n", []string{"p\nq\n"}, false, "p\nq\n", 0},
		{"failed run printed more", "a\nb\n", []string{"a\nz\n"}, false, "z\n", 1},
		{"error banner after the repeated lines", "i5\ni6\n\n=== BAD TERMINATION\n", []string{"i5\ni6\ni7\n"}, false, "i7\n", 2},
		{"failed partial line ignored", "a\nb", []string{"a\nb\nc\n"}, false, "b\nc\n", 1},
		{"ends undecided", "a\nb\nc\n", []string{"a\nb\n"}, true, "", 2},
		{"repeated lines: longest overlap", "x\nx\n", []string{"x\nx\ny\n"}, false, "y\n", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewLineDedup([]byte(tt.failed))
			var out strings.Builder
			for _, c := range tt.restored {
				out.Write(d.Feed([]byte(c)))
			}
			if tt.flush {
				out.Write(d.Flush())
			} else {
				assert.Empty(t, d.Flush(), "nothing is held once decided")
			}
			assert.Equal(t, tt.want, out.String())
			assert.Equal(t, tt.dropped, d.dropped)
		})
	}
	assert.Nil(t, NewLineDedup([]byte("partial only")), "nothing to compare with")
}

// quadraticDedup is the filter as it was before it was made linear: every
// start of F tried against every held line. The tests check the new one
// against it.
func quadraticDedup(failed []byte, restored []string) (string, int) {
	f := splitLinesForTest(failed)
	alive := map[int]bool{}
	for i := range f {
		alive[i] = true
	}
	var held []string
	var out strings.Builder
	best, done := 0, len(f) == 0
	partial := ""
	dropped := 0
	for _, c := range restored {
		if done {
			out.WriteString(c)
			continue
		}
		buf := partial + c
		partial = ""
		for len(buf) > 0 && !done {
			i := strings.IndexByte(buf, '\n')
			if i < 0 {
				partial = buf
				buf = ""
				break
			}
			l := buf[:i+1]
			buf = buf[i+1:]
			k := len(held)
			held = append(held, l)
			for s := range alive {
				if s+k >= len(f) || f[s+k] != l {
					delete(alive, s)
					best = max(best, k)
				}
			}
			if len(alive) == 0 {
				done = true
				dropped = min(best, len(held))
				out.WriteString(strings.Join(held[dropped:], ""))
			}
		}
		out.WriteString(buf)
	}
	if !done {
		dropped = len(held)
		if len(alive) == 0 {
			dropped = best
		}
		out.WriteString(strings.Join(held[dropped:], ""))
		out.WriteString(partial)
	}
	return out.String(), dropped
}

func splitLinesForTest(b []byte) []string {
	var out []string
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			break
		}
		out = append(out, string(b[:i+1]))
		b = b[i+1:]
	}
	return out
}

// The linear filter gives what the quadratic one gave, on random runs over a
// small alphabet (so that repetitions, partial matches and restarts of the
// match are common), fed in random chunks.
func TestLineDedupSameAsBefore(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	word := func() string { return string(rune('a'+rng.IntN(3))) + "\n" }
	for n := range 3000 {
		var failed strings.Builder
		for range rng.IntN(12) {
			failed.WriteString(word())
		}
		if rng.IntN(4) == 0 {
			failed.WriteString("part") // an unfinished last line
		}
		var all strings.Builder
		for range rng.IntN(14) {
			all.WriteString(word())
		}
		// Chunks cut anywhere, lines split across them.
		var chunks []string
		rest := all.String()
		for len(rest) > 0 {
			k := 1 + rng.IntN(len(rest))
			chunks = append(chunks, rest[:k])
			rest = rest[k:]
		}
		want, wantDropped := quadraticDedup([]byte(failed.String()), chunks)
		d := NewLineDedup([]byte(failed.String()))
		var got strings.Builder
		dropped := 0
		if d == nil {
			got.WriteString(all.String())
		} else {
			for _, c := range chunks {
				got.Write(d.Feed([]byte(c)))
			}
			got.Write(d.Flush())
			dropped = d.dropped
		}
		require.Equal(t, want, got.String(), "case %d: failed %q, restored %q", n, failed.String(), chunks)
		require.Equal(t, wantDropped, dropped, "case %d: failed %q, restored %q", n, failed.String(), chunks)
	}
}

// identicalLines is n lines "same\n": the quadratic filter's worst case.
func identicalLines(n int) []byte { return bytes.Repeat([]byte("same\n"), n) }

// cpuTime is the CPU time this process has used: what the filter costs,
// whatever else runs on the machine (wall time on a loaded 2-core machine
// would measure the load).
func cpuTime(t *testing.T) time.Duration {
	var ru unix.Rusage
	require.NoError(t, unix.Getrusage(unix.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// A million repeated lines against a million printed after the cut (the
// worst case of the old filter: every start matches every line; hours of
// CPU) are filtered in well under a few seconds of CPU, and the result is
// right: the repetition dropped, the new lines shown. So are a million
// distinct lines (the other extreme: a copy of each line kept).
func TestLineDedupMillionLines(t *testing.T) {
	const n = 1_000_000
	var distinct bytes.Buffer
	for i := range n {
		fmt.Fprintf(&distinct, "line %d\n", i)
	}
	for _, tc := range []struct {
		name             string
		failed, restored []byte
		dropped          int
	}{
		{"identical lines", identicalLines(n), identicalLines(n), n},
		// From the second line on, as if the first made the checkpoint.
		{"distinct lines", distinct.Bytes(), distinct.Bytes()[len("line 0\n"):], n - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wall, cpu := time.Now(), cpuTime(t)
			d := NewLineDedup(tc.failed)
			require.NotNil(t, d)
			var out bytes.Buffer
			for rest := tc.restored; len(rest) > 0; {
				k := min(len(rest), 64<<10) // as pipes deliver it
				out.Write(d.Feed(rest[:k]))
				rest = rest[k:]
			}
			out.Write(d.Feed([]byte("new\nmore\n")))
			out.Write(d.Flush())
			used := cpuTime(t) - cpu
			t.Logf("%d lines against %d: %s of CPU, %s of wall time", n, n, used.Round(time.Millisecond), time.Since(wall).Round(time.Millisecond))
			require.Equal(t, "new\nmore\n", out.String())
			require.Equal(t, tc.dropped, d.dropped)
			require.Less(t, used, 4*time.Second)
		})
	}
}

// The comparison stops at MaxDedupLines lines of F: a longer repetition
// loses that many lines and the rest of it is shown.
func TestLineDedupBounded(t *testing.T) {
	d := NewLineDedup(identicalLines(MaxDedupLines + 10))
	require.Len(t, d.f, MaxDedupLines)
	out := d.Feed(identicalLines(MaxDedupLines + 10))
	require.Equal(t, identicalLines(10), out)
	require.Equal(t, MaxDedupLines, d.dropped)

	// A restored line longer than any of F is decided on before its end.
	d = NewLineDedup([]byte("a\nb\n"))
	require.Empty(t, d.Feed([]byte("a\n")))
	require.Equal(t, "bbbbbbbb", string(d.Feed([]byte("bbbbbbbb"))))
	n, ok := d.Decided()
	require.True(t, ok)
	require.Equal(t, 1, n)
}

func BenchmarkLineDedupIdentical(b *testing.B) {
	for _, n := range []int{8_000, 1_000_000} {
		failed := identicalLines(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				d := NewLineDedup(failed)
				d.Feed(failed)
				d.Feed([]byte("new\n"))
			}
			b.ReportMetric(float64(n), "lines/op")
		})
	}
}
