package agent

// After an automatic rollback the restored job prints again what the failed
// run printed after the checkpoint it rolls back to. lineDedup drops that
// repetition from the job's stdout, so that its output reads as one
// uninterrupted run's.
//
// The failed run's stdout after the checkpoint's cut (the job's output
// offset when its traffic was blocked) is F = f[0..n). Lines printed just
// before a pod froze may be in F but not in the checkpoint, so the restored
// run prints some suffix F[i:] again, then goes on: the filter finds the
// smallest i for which the restored output starts with F[i:] and drops
// those lines. It holds the restored output back only while that is
// undecided, and gives up (passes everything through) at the first line
// that fits no candidate.

import (
	"bytes"
	"sync"
)

type lineDedup struct {
	mu      sync.Mutex
	f       [][]byte     // the failed run's lines after the cut
	alive   map[int]bool // candidates i: R so far equals F[i : i+len(R)]
	held    [][]byte     // restored lines not yet emitted
	partial []byte       // restored bytes after the last newline
	done    bool         // decided: pass through
	dropped int          // lines dropped, for the event log
	told    bool         // the decision went to the event log
}

// decided returns, once, the number of lines dropped when the filter has
// decided.
func (d *lineDedup) decided() (int, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.done || d.told {
		return 0, false
	}
	d.told = true
	return d.dropped, true
}

// newLineDedup filters a restored run against the failed run's stdout
// after the cut; nil if there is nothing to compare with.
func newLineDedup(failed []byte) *lineDedup {
	lines := splitLines(failed)
	if len(lines) == 0 {
		return nil
	}
	d := &lineDedup{f: lines, alive: map[int]bool{}}
	for i := 0; i < len(lines); i++ {
		d.alive[i] = true
	}
	return d
}

// splitLines returns the complete lines of b, with their newlines.
func splitLines(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			break // a partial last line: the failed run never finished it
		}
		out = append(out, b[:i+1])
		b = b[i+1:]
	}
	return out
}

// feed takes restored stdout and returns what to emit now.
func (d *lineDedup) feed(data []byte) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return data
	}
	buf := append(d.partial, data...)
	d.partial = nil
	var out []byte
	for len(buf) > 0 && !d.done {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			d.partial = append([]byte(nil), buf...)
			buf = nil
			break
		}
		out = append(out, d.line(buf[:i+1])...)
		buf = buf[i+1:]
	}
	if d.done {
		out = append(out, buf...)
	}
	return out
}

// line takes one complete restored line.
func (d *lineDedup) line(l []byte) []byte {
	k := len(d.held)
	d.held = append(d.held, append([]byte(nil), l...))
	for i := range d.alive {
		if i+k >= len(d.f) || !bytes.Equal(d.f[i+k], l) {
			delete(d.alive, i)
		}
	}
	if len(d.alive) == 0 {
		return d.decide(-1)
	}
	// The smallest candidate decides once it has matched all of F[i:].
	lowest := len(d.f)
	for i := range d.alive {
		lowest = min(lowest, i)
	}
	if lowest+len(d.held) == len(d.f) {
		return d.decide(lowest)
	}
	return nil
}

// decide drops the repeated lines (F[i:], or none for i < 0), emits the
// rest of what is held and passes everything through from now on.
func (d *lineDedup) decide(i int) []byte {
	d.done = true
	skip := 0
	if i >= 0 {
		skip = min(len(d.f)-i, len(d.held))
	}
	d.dropped = skip
	var out []byte
	for _, l := range d.held[skip:] {
		out = append(out, l...)
	}
	d.held = nil
	return out
}

// flush decides with what has been seen (the run ended, or stopped, while
// undecided) and returns what is still held.
func (d *lineDedup) flush() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return nil
	}
	lowest := -1
	for i := range d.alive {
		if lowest < 0 || i < lowest {
			lowest = i
		}
	}
	out := d.decide(lowest)
	out = append(out, d.partial...)
	d.partial = nil
	return out
}
