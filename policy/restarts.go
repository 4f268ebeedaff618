package policy

import (
	"fmt"
	"time"
)

// Restarts is the automatic-restart history of one job. The zero value is an
// empty history, ready to use. Calls must be serialised by the caller.
type Restarts struct {
	times []time.Time // restarts recorded, in the order recorded
}

// Allow reports whether an automatic restart at now is within budget (fewer
// than RestartBudget restarts in the RestartWindow before now) and the delay
// to wait before it: none for the first restart in the window, then
// RestartBase doubled for every further one, capped at RestartMax, so that a
// job crashing in a loop slows down before it runs out of budget. When not allowed, reason is a sentence for the job's
// event log.
//
// Allow also forgets restarts older than the window, which keeps the history
// bounded for a job that runs for months; a later, wider window therefore
// does not bring them back.
func (r *Restarts) Allow(c Config, now time.Time) (delay time.Duration, ok bool, reason string) {
	r.forget(c, now)
	n := r.Count(c, now)
	switch {
	case c.RestartBudget <= 0:
		return 0, false, fmt.Sprintf("automatic restarts are disabled (policy.restart_budget = %d)", c.RestartBudget)
	case n >= c.RestartBudget:
		return 0, false, fmt.Sprintf("%d automatic %s in the last %s (policy.restart_budget = %d): giving up",
			n, plural(n, "restart", "restarts"), c.RestartWindow, c.RestartBudget)
	}
	if n == 0 {
		// The first failure in the window is not a loop: roll back at once.
		return 0, true, ""
	}
	return backoff(c.RestartBase, c.RestartMax, n-1), true, ""
}

// Record notes an automatic restart made at `at`.
func (r *Restarts) Record(at time.Time) {
	r.times = append(r.times, at)
}

// Count is the number of restarts in the RestartWindow before now. Restarts
// recorded after now (a clock stepped back) are counted too: erring towards
// fewer restarts is the safe side.
func (r *Restarts) Count(c Config, now time.Time) int {
	n := 0
	for _, t := range r.times {
		if inWindow(c, now, t) {
			n++
		}
	}
	return n
}

func inWindow(c Config, now, t time.Time) bool {
	return t.After(now.Add(-c.RestartWindow))
}

func (r *Restarts) forget(c Config, now time.Time) {
	kept := r.times[:0]
	for _, t := range r.times {
		if inWindow(c, now, t) {
			kept = append(kept, t)
		}
	}
	clear(r.times[len(kept):])
	r.times = kept
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
