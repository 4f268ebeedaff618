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
// filter holds the restored lines back while it matches them against every
// start i, then drops the longest stretch found (the earliest on a tie) and
// passes everything through from then on. Lines the failed run already
// printed stay printed: only the repetition is dropped.

import (
	"bytes"
	"sync"
)

// LineDedup is the filter of one restored run's stdout.
type LineDedup struct {
	mu      sync.Mutex
	f       [][]byte     // the failed run's lines after the cut
	alive   map[int]bool // starts i still matching every held line
	held    [][]byte     // restored lines not yet emitted
	partial []byte       // restored bytes after the last newline
	best    int          // the longest match of a start that stopped matching...
	bestAt  int          // ...and that start
	done    bool         // decided: pass through
	dropped int          // lines dropped
	told    bool         // the decision went to the event log
}

// NewLineDedup filters a restored run against the failed run's stdout
// after the cut; nil if there is nothing to compare with.
func NewLineDedup(failed []byte) *LineDedup {
	lines := splitLines(failed)
	if len(lines) == 0 {
		return nil
	}
	d := &LineDedup{f: lines, alive: map[int]bool{}}
	for i := range lines {
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

// Feed takes restored stdout and returns what to emit now.
func (d *LineDedup) Feed(data []byte) []byte {
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
			return out
		}
		out = append(out, d.line(buf[:i+1])...)
		buf = buf[i+1:]
	}
	return append(out, buf...)
}

// finish records that start i matched k lines and stopped matching.
func (d *LineDedup) finish(i, k int) {
	delete(d.alive, i)
	if k > d.best || (k == d.best && k > 0 && i < d.bestAt) {
		d.best, d.bestAt = k, i
	}
}

// line takes one complete restored line.
func (d *LineDedup) line(l []byte) []byte {
	k := len(d.held)
	d.held = append(d.held, append([]byte(nil), l...))
	for i := range d.alive {
		if i+k >= len(d.f) || !bytes.Equal(d.f[i+k], l) {
			d.finish(i, k)
		}
	}
	if len(d.alive) > 0 {
		return nil
	}
	return d.decide()
}

// decide drops the longest repeated stretch from the start of the held
// lines, emits the rest and passes everything through from now on.
func (d *LineDedup) decide() []byte {
	d.done = true
	d.dropped = min(d.best, len(d.held))
	var out []byte
	for _, l := range d.held[d.dropped:] {
		out = append(out, l...)
	}
	d.held = nil
	return out
}

// Flush decides with what has been seen (the run ended or stopped while
// undecided) and returns what is still held.
func (d *LineDedup) Flush() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return nil
	}
	for i := range d.alive {
		d.finish(i, len(d.held))
	}
	out := append(d.decide(), d.partial...)
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
