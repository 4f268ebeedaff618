package joblog

// After an automatic rollback the restored job prints again what the failed
// run printed after the checkpoint it rolls back to. LineDedup drops that
// repetition from the job's stdout, so that its output reads as one run's.
//
// The failed run's stdout after the checkpoint's cut (the job's output
// offset when its traffic was blocked) is F = f[0..n). The restored run
// prints a stretch F[i:i+m] again and then goes on with new lines: i > 0
// when lines printed just before a pod froze are in F but not in the
// checkpoint, and i+m < n when the failed run printed more before it died
// (its last lines, an MPI error banner) than the restored run repeats. The
// filter holds the restored lines back while they still occur, in order, as
// a stretch of F; at the first line that makes them not, it drops the held
// lines, emits that line and passes everything through from then on. Lines
// the failed run already printed stay printed: only the repetition is
// dropped.
//
// "Do the held lines R[0..k] occur in F" is answered by Knuth-Morris-Pratt
// with the pattern (R) growing and the text (F) fixed: the scan of F only
// moves forward, stopping at the first place where all of R so far matches,
// and R's failure function is built one line at a time as lines arrive. So
// the work is linear in the lines of both runs (a comparison of every held
// line with every start of F, as before, took 0.5 s for 8,000 identical
// lines and hours for a million), and the memory is an int32 per line of F
// and two per held line, plus one copy of each distinct line of F.
//
// The comparison covers at most the first MaxDedupLines lines and
// MaxDedupBytes bytes of F. A repetition longer than that loses that much,
// and the rest of it is shown again.

import (
	"bytes"
	"errors"
	"sync"

	"github.com/cruz-hpc/cruz/internal/api"
)

// Bounds of the failed run's output that a restored run is compared with.
const (
	MaxDedupLines = 1 << 20
	MaxDedupBytes = 16 << 20
)

// noLine is the symbol of a restored line that F does not have.
const noLine = -1

// LineDedup is the filter of one restored run's stdout.
type LineDedup struct {
	mu      sync.Mutex
	ids     map[string]int32 // each distinct line of F, numbered
	f       []int32          // F, as line numbers
	maxLine int              // the longest line of F, newline included
	r       []int32          // the restored lines held back, as line numbers
	pi      []int32          // KMP failure function of r
	j       int              // next line of F to scan
	q       int              // lines of r matched ending just before f[j]
	partial []byte           // restored bytes after the last newline
	done    bool             // decided: pass through
	dropped int              // lines dropped
	told    bool             // the decision went to the event log
}

// dedupBuilder collects F, a line at a time, up to the bounds.
type dedupBuilder struct {
	d       *LineDedup
	bytes   int
	partial []byte
	full    bool
}

func newDedupBuilder() *dedupBuilder {
	return &dedupBuilder{d: &LineDedup{ids: map[string]int32{}}}
}

// write takes the failed run's stdout; it returns false once F is full.
func (b *dedupBuilder) write(data []byte) bool {
	for len(data) > 0 && !b.full {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			if len(b.partial)+len(data) > MaxDedupBytes-b.bytes {
				b.full = true // a line longer than what is left to compare
				break
			}
			b.partial = append(b.partial, data...)
			break
		}
		line := data[:i+1]
		data = data[i+1:]
		if len(b.partial) > 0 {
			line = append(b.partial, line...)
			b.partial = b.partial[:0]
		}
		b.add(line)
	}
	return !b.full
}

func (b *dedupBuilder) add(line []byte) {
	d := b.d
	if len(d.f) >= MaxDedupLines || b.bytes+len(line) > MaxDedupBytes {
		b.full = true
		return
	}
	b.bytes += len(line)
	id, ok := d.ids[string(line)]
	if !ok {
		id = int32(len(d.ids))
		d.ids[string(line)] = id
	}
	d.f = append(d.f, id)
	d.maxLine = max(d.maxLine, len(line))
}

// filter returns the filter, nil if F has no complete line (a partial last
// line is not compared: the failed run never finished it).
func (b *dedupBuilder) filter() *LineDedup {
	if len(b.d.f) == 0 {
		return nil
	}
	return b.d
}

// NewLineDedup filters a restored run against the failed run's stdout
// after the cut; nil if there is nothing to compare with.
func NewLineDedup(failed []byte) *LineDedup {
	b := newDedupBuilder()
	b.d.f = make([]int32, 0, min(bytes.Count(failed, []byte{'\n'}), MaxDedupLines))
	b.write(failed)
	return b.filter()
}

// DedupSince makes the filter of a run restored from a checkpoint whose
// output offset is offset, from the stdout in the output log at path after
// it: read as a stream, up to the bounds, never all of it at once. Nil if
// there is nothing to compare with.
func DedupSince(path string, offset int64) (*LineDedup, error) {
	b := newDedupBuilder()
	errFull := errors.New("full")
	err := EachFrame(path, offset, -1, func(fr api.Frame) error {
		if fr.Stream == "stdout" && !b.write(fr.Data) {
			return errFull
		}
		return nil
	})
	if err != nil && !errors.Is(err, errFull) {
		return nil, err
	}
	return b.filter(), nil
}

// Feed takes restored stdout and returns what to emit now.
func (d *LineDedup) Feed(data []byte) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return data
	}
	var out []byte
	for len(data) > 0 && !d.done {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			d.partial = append(d.partial, data...)
			data = nil
			if len(d.partial) > d.maxLine {
				// Longer than any line of F: it is not a repeated one.
				out = append(out, d.decide()...)
				out = append(out, d.partial...)
				d.partial = nil
			}
			break
		}
		line := data[:i+1]
		data = data[i+1:]
		if len(d.partial) > 0 {
			line = append(d.partial, line...)
			d.partial = nil
		}
		if !d.line(line) {
			out = append(append(out, d.decide()...), line...)
		}
	}
	return append(out, data...)
}

// line takes one complete restored line and reports whether the held lines
// with it still occur in F (it is then held too).
func (d *LineDedup) line(l []byte) bool {
	c := int32(noLine)
	if id, ok := d.ids[string(l)]; ok {
		c = id
	}
	// Extend the failure function to the new last line of r.
	k := 0
	if n := len(d.r); n > 0 {
		k = int(d.pi[n-1])
		for k > 0 && d.r[k] != c {
			k = int(d.pi[k-1])
		}
		if d.r[k] == c {
			k++
		}
	}
	d.r = append(d.r, c)
	d.pi = append(d.pi, int32(k))
	// Scan on from where all of r so far matched.
	if c == noLine {
		return false
	}
	for d.j < len(d.f) {
		for d.q > 0 && d.f[d.j] != d.r[d.q] {
			d.q = int(d.pi[d.q-1])
		}
		if d.f[d.j] == d.r[d.q] {
			d.q++
		}
		d.j++
		if d.q == len(d.r) {
			return true
		}
	}
	return false
}

// decide drops the held lines (the last line taken, which ended the
// match, is the caller's to emit) and passes everything through from now on.
func (d *LineDedup) decide() []byte {
	if d.done {
		return nil
	}
	d.done = true
	d.dropped = len(d.r)
	if d.dropped > 0 && (d.q != len(d.r)) {
		d.dropped-- // the line that did not match is not a repetition
	}
	d.r, d.pi, d.f, d.ids = nil, nil, nil, nil
	return nil
}

// Flush decides with what has been seen (the run ended or stopped while
// undecided) and returns what is still held.
func (d *LineDedup) Flush() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return nil
	}
	d.decide()
	out := d.partial
	d.partial = nil
	return out
}

// Decided returns, once, the number of lines dropped when the filter has
// decided.
func (d *LineDedup) Decided() (int, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.done || d.told {
		return 0, false
	}
	d.told = true
	return d.dropped, true
}
