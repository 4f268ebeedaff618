// Package check holds what a user would check of a Cruz job, in one place
// for the end-to-end tests and the demo (scripts/demo.sh runs these checks
// through tests/democheck): the output a test program must print, a run's
// output without the MPI launcher's abort banners, the pods as the kernel
// sees them, and the stories a job's event log must tell.
//
// It reads only what users see (cruz's JSON, decoded into internal/api's
// types, and /proc); it must not import the agent or reach into its state.
// Each check returns the problems it found, one sentence each, or none.
package check

import (
	"fmt"
	"strings"
)

// AllreduceOutput is what tests/apps/mpi_allreduce.c prints for np ranks and
// iters iterations, computed independently of MPI.
func AllreduceOutput(np, iters int) []string {
	lines := []string{fmt.Sprintf("start ranks %d", np)}
	var acc int64
	for i := 1; i <= iters; i++ {
		var sum int64
		for r := 0; r < np; r++ {
			sum += int64(r+1) * int64(i) * int64(i) % 1000003
		}
		acc += sum
		lines = append(lines, fmt.Sprintf("iter %d sum %d acc %d", i, sum, acc))
	}
	return append(lines, fmt.Sprintf("result %d ranks %d iters %d", acc, np, iters))
}

// CounterLines is what tests/apps/counter.c prints from line from to line
// to.
func CounterLines(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("line %d", i))
	}
	return out
}

// Lines splits output into its lines, without the newline at the end.
func Lines(s string) []string {
	return strings.Split(strings.TrimRight(s, "\n"), "\n")
}

// NonEmptyLines splits output into lines, dropping empty ones (an empty
// output gives no line at all).
func NonEmptyLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// ProgramOutput is a run's output without the lines of MPICH's abort banner
// ("BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES" and the lines
// around it), which a dying mpiexec prints before anyone knows the run has
// failed; banners counts the banners left out. What is left is the
// program's own output, every line of which must be there exactly once.
func ProgramOutput(lines []string) (out []string, banners int) {
	for _, l := range lines {
		switch {
		case l == "" || strings.HasPrefix(l, "="):
			if strings.Contains(l, "BAD TERMINATION") {
				banners++
			}
		case strings.HasPrefix(l, "YOUR APPLICATION TERMINATED WITH THE EXIT STRING"),
			l == "This typically refers to a problem with your application.",
			l == "Please see the FAQ page for debugging suggestions":
		default:
			out = append(out, l)
		}
	}
	return out, banners
}

// SameLines compares got with want line by line: nil if equal, else the
// first difference and the counts, as a user reading a diff would say it.
func SameLines(want, got []string) []string {
	for i := 0; i < len(want) && i < len(got); i++ {
		if want[i] != got[i] {
			return []string{fmt.Sprintf("line %d is %q, expected %q (%d lines, expected %d)", i+1, got[i], want[i], len(got), len(want))}
		}
	}
	switch {
	case len(got) < len(want):
		return []string{fmt.Sprintf("%d lines, expected %d: the first missing is %q", len(got), len(want), want[len(got)])}
	case len(got) > len(want):
		return []string{fmt.Sprintf("%d lines, expected %d: the first extra is %q", len(got), len(want), got[len(want)])}
	}
	return nil
}
