package joblog

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
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
