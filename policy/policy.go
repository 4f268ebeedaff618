// Package policy is the arithmetic of Cruz's policy engine: when the next
// periodic checkpoint of a job is due, which checkpoints to delete, and how
// long to wait before retrying a failed checkpoint or restarting a failed job.
//
// Everything here is pure: no I/O, no goroutines, and no reading of the clock.
// Functions that need the current time take it as an argument, so that the
// agent owns the clock and tests are deterministic.
package policy

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Mode selects how the period between checkpoints is chosen.
type Mode string

const (
	ModeFixed Mode = "fixed" // checkpoint every Interval
	ModeAuto  Mode = "auto"  // Young/Daly optimum from the measured checkpoint cost and the MTBF
	ModeOff   Mode = "off"   // no periodic checkpoints
)

// Config is the policy of one job. The agent builds it from the [policy]
// section of its configuration and is expected to call Validate first: the
// functions of this package do not re-check it, they only avoid crashing or
// looping on values Validate would have refused.
type Config struct {
	Mode        Mode
	Interval    time.Duration // ModeFixed: the period; ModeAuto: the interval used until a cost is measured
	MTBF        time.Duration // ModeAuto: mean time between failures of the job's nodes (the cluster's failure rate, scaled by the job's node count by the caller)
	MinInterval time.Duration // ModeAuto clamps to [MinInterval, MaxInterval]
	MaxInterval time.Duration
	// MaxOverhead caps the share of the job's time its checkpoints hold it
	// (traffic dropped, processes frozen): the next checkpoint waits until
	// the job has run long enough since the last one. In (0, 1]; 1: no cap.
	MaxOverhead   float64
	Keep          int           // retention: keep the last Keep complete checkpoints (>=1)
	MaxBytes      int64         // optional storage cap per job (0 = none)
	RetryBase     time.Duration // a failed checkpoint is retried after RetryBase, doubling, capped at RetryMax
	RetryMax      time.Duration
	RestartBudget int           // at most this many automatic restarts ...
	RestartWindow time.Duration // ... within this sliding window
	RestartBase   time.Duration // delay before an automatic restart: RestartBase doubling per restart in the window, capped at RestartMax
	RestartMax    time.Duration
}

// DefaultConfig is the policy used for the keys an operator leaves out. It is
// also the source of the examples in Validate's messages, so that the two
// cannot drift apart.
func DefaultConfig() Config {
	return Config{
		Mode:          ModeFixed,
		Interval:      10 * time.Minute,
		MTBF:          24 * time.Hour,
		MinInterval:   30 * time.Second,
		MaxInterval:   6 * time.Hour,
		MaxOverhead:   0.10,
		Keep:          3,
		MaxBytes:      0,
		RetryBase:     10 * time.Second,
		RetryMax:      5 * time.Minute,
		RestartBudget: 3,
		RestartWindow: time.Hour,
		RestartBase:   2 * time.Second,
		RestartMax:    2 * time.Minute,
	}
}

// Validate reports every problem at once, so that an operator fixes the file
// in one pass. Each message starts with the TOML key of the field and says
// what would be accepted.
//
// Fields that the mode does not use (the interval when off; the MTBF and the
// clamps unless auto) only need to be non-negative: a negative duration is a
// typo whatever the mode, but a zero there is harmless.
func (c Config) Validate() error {
	d := DefaultConfig()
	var errs []error
	bad := func(key, value, want, example string) {
		errs = append(errs, fmt.Errorf("%s: %s is not %s (example: %s)", key, value, want, example))
	}
	positive := func(key string, v, example time.Duration, used bool) {
		switch {
		case used && v <= 0:
			bad(key, showDuration(v), "a duration greater than zero", showDuration(example))
		case v < 0:
			bad(key, showDuration(v), "a duration >= 0", showDuration(example))
		}
	}

	switch c.Mode {
	case ModeFixed, ModeAuto, ModeOff:
	default:
		bad("policy.mode", fmt.Sprintf("%q", string(c.Mode)),
			fmt.Sprintf("one of %q, %q or %q", ModeFixed, ModeAuto, ModeOff), fmt.Sprintf("%q", string(d.Mode)))
	}
	auto := c.Mode == ModeAuto
	positive("policy.interval", c.Interval, d.Interval, c.Mode == ModeFixed || auto)
	positive("policy.mtbf", c.MTBF, d.MTBF, auto)
	positive("policy.min_interval", c.MinInterval, d.MinInterval, auto)
	positive("policy.max_interval", c.MaxInterval, d.MaxInterval, auto)
	if auto && c.MinInterval > 0 && c.MaxInterval > 0 && c.MaxInterval < c.MinInterval {
		bad("policy.max_interval", showDuration(c.MaxInterval),
			fmt.Sprintf("a duration >= policy.min_interval (%s)", showDuration(c.MinInterval)), showDuration(d.MaxInterval))
	}

	if !(c.MaxOverhead > 0 && c.MaxOverhead <= 1) {
		bad("policy.max_overhead", fmt.Sprint(c.MaxOverhead), "a fraction of the job's time above 0 and at most 1 (1: no cap)", fmt.Sprint(d.MaxOverhead))
	}

	if c.Keep < 1 {
		bad("policy.keep", fmt.Sprint(c.Keep), "an integer >= 1", fmt.Sprint(d.Keep))
	}
	if c.MaxBytes < 0 {
		bad("policy.max_bytes", fmt.Sprint(c.MaxBytes), "an integer >= 0, where 0 means no cap",
			fmt.Sprintf("%d, or %d for 50 GiB", d.MaxBytes, int64(50)<<30))
	}

	// A zero retry delay would retry a failing checkpoint in a tight loop.
	positive("policy.retry_base", c.RetryBase, d.RetryBase, true)
	positive("policy.retry_max", c.RetryMax, d.RetryMax, true)
	if c.RetryBase > 0 && c.RetryMax > 0 && c.RetryMax < c.RetryBase {
		bad("policy.retry_max", showDuration(c.RetryMax),
			fmt.Sprintf("a duration >= policy.retry_base (%s)", showDuration(c.RetryBase)), showDuration(d.RetryMax))
	}

	// A budget of 0 is accepted: it disables automatic restarts.
	if c.RestartBudget < 0 {
		bad("policy.restart_budget", fmt.Sprint(c.RestartBudget), "an integer >= 0, where 0 disables automatic restarts",
			fmt.Sprint(d.RestartBudget))
	}
	positive("policy.restart_window", c.RestartWindow, d.RestartWindow, true)
	// A zero restart delay is accepted: the budget already bounds a restart loop.
	positive("policy.restart_base", c.RestartBase, d.RestartBase, false)
	positive("policy.restart_max", c.RestartMax, d.RestartMax, false)
	if c.RestartBase >= 0 && c.RestartMax >= 0 && c.RestartMax < c.RestartBase {
		bad("policy.restart_max", showDuration(c.RestartMax),
			fmt.Sprintf("a duration >= policy.restart_base (%s)", showDuration(c.RestartBase)), showDuration(d.RestartMax))
	}

	return errors.Join(errs...)
}

// showDuration renders d as an operator would write it in TOML ("10m" rather
// than "10m0s"), quoted, so that the bad value in a message can be found in
// the file. It mirrors config.Duration's text form without importing the
// config package, which will import this one.
func showDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return fmt.Sprintf("%q", s)
}

// Young is Young's (1974) first-order optimal checkpoint interval,
// sqrt(2*C*M), for a checkpoint cost C and a mean time between failures M.
// It is 0 when either is not positive, since there is no optimum to speak of.
func Young(cost, mtbf time.Duration) time.Duration {
	if cost <= 0 || mtbf <= 0 {
		return 0
	}
	return fromNanos(young(float64(cost), float64(mtbf)))
}

func young(c, m float64) float64 { return math.Sqrt(2 * c * m) }

// Daly is Daly's (2006) higher-order optimal checkpoint interval:
// sqrt(2CM)*(1 + sqrt(C/(2M))/3 + (C/(2M))/9) - C when C < 2M, and M
// otherwise, where the expansion no longer holds. Young overestimates the
// interval when the cost is not negligible against the MTBF; Daly corrects
// for it. Never below 0.
func Daly(cost, mtbf time.Duration) time.Duration {
	cost = max(cost, 0)
	if cost >= 2*mtbf {
		return max(mtbf, 0)
	}
	c, m := float64(cost), float64(mtbf)
	x := c / (2 * m)
	return fromNanos(young(c, m)*(1+math.Sqrt(x)/3+x/9) - c)
}

// fromNanos rounds a float number of nanoseconds to a Duration, saturating
// instead of wrapping around, and never below 0.
func fromNanos(ns float64) time.Duration {
	switch {
	case math.IsNaN(ns) || ns <= 0:
		return 0
	case ns >= math.MaxInt64:
		return math.MaxInt64
	}
	return time.Duration(math.Round(ns))
}

// backoff is base doubled `doublings` times, capped at limit and never below
// 0. It stops doubling as soon as the cap is reached, so that a long run of
// failures cannot overflow.
func backoff(base, limit time.Duration, doublings int) time.Duration {
	if base <= 0 {
		return 0
	}
	d := base
	for i := 0; i < doublings && d < limit; i++ {
		if d > math.MaxInt64/2 {
			d = limit
			break
		}
		d *= 2
	}
	return max(min(d, limit), 0)
}

// costWindow is how many recent checkpoint costs ModeAuto averages: enough to
// smooth out one slow dump, few enough to follow a job whose memory grows.
const costWindow = 5

// Scheduler decides when the next periodic checkpoint of one job is due. It
// only holds what happened (successes, failures, costs); the schedule is
// derived from it on every call, so that a change of MTBF or policy applies
// at once. Calls must be serialised by the caller and made in the order the
// attempts ended.
type Scheduler struct {
	cfg         Config
	start       time.Time
	lastSuccess time.Time // zero until the first success
	lastFailure time.Time
	failures    int
	costs       []time.Duration // the last costWindow successful costs, oldest first
	held        time.Duration   // what every checkpoint since start held the job, failed ones included
}

// NewScheduler starts the schedule of a job that started (or was restored) at
// start: the first checkpoint is due one interval later.
func NewScheduler(c Config, start time.Time) *Scheduler {
	return &Scheduler{cfg: c, start: start}
}

// Interval is the current period: the fixed Interval, or for ModeAuto
// Daly(mean cost of the last 5 successes, MTBF) clamped to [MinInterval,
// MaxInterval]; before any cost is known, ModeAuto uses Interval, clamped
// too. ModeOff has no period and returns 0.
func (s *Scheduler) Interval() time.Duration {
	switch s.cfg.Mode {
	case ModeFixed:
		return s.cfg.Interval
	case ModeAuto:
		cost, ok := s.MeanCost()
		if !ok {
			return s.clamp(s.cfg.Interval)
		}
		return s.clamp(Daly(cost, s.cfg.MTBF))
	}
	return 0
}

// clamp bounds d to [MinInterval, MaxInterval]. A bound that is not positive
// is ignored rather than applied, so that an unset MaxInterval cannot clamp
// every interval to 0 and checkpoint continuously.
func (s *Scheduler) clamp(d time.Duration) time.Duration {
	if s.cfg.MaxInterval > 0 {
		d = min(d, s.cfg.MaxInterval)
	}
	if s.cfg.MinInterval > 0 {
		d = max(d, s.cfg.MinInterval)
	}
	return d
}

// MeanCost is the mean of the last 5 successful checkpoint costs, which
// ModeAuto feeds to Daly; ok is false before the first success. The agent
// can log it next to the interval it produced.
func (s *Scheduler) MeanCost() (time.Duration, bool) {
	if len(s.costs) == 0 {
		return 0, false
	}
	var sum time.Duration
	for _, c := range s.costs {
		sum += c
	}
	return sum / time.Duration(len(s.costs)), true
}

// Next is when the next checkpoint is due: the last success (or the start)
// plus Interval, unless failures are pending, in which case it is the last
// failure plus RetryBase * 2^(failures-1), capped at RetryMax. ok is false
// when no periodic checkpoint is scheduled: ModeOff, or a period that is not
// positive, which would otherwise checkpoint back to back.
func (s *Scheduler) Next() (time.Time, bool) {
	interval := s.Interval()
	if s.cfg.Mode == ModeOff || interval <= 0 {
		return time.Time{}, false
	}
	if s.failures > 0 {
		return s.lastFailure.Add(backoff(s.cfg.RetryBase, s.cfg.RetryMax, s.failures-1)), true
	}
	last := s.start
	if !s.lastSuccess.IsZero() {
		last = s.lastSuccess
	}
	next := last.Add(interval)
	if cap := s.overheadNext(); cap.After(next) {
		next = cap
	}
	return next, true
}

// overheadNext is the earliest time the next checkpoint keeps the job's
// overhead within MaxOverhead, judged twice: the last checkpoint's hold
// against the run after it (held <= MaxOverhead * (held + run): a hold of
// 1.5 s at 10 % wants 13.5 s of running), and all holds since the start
// against the time since the start (which also covers a first checkpoint
// that cost more than its interval). Zero without a cap or a hold.
func (s *Scheduler) overheadNext() time.Time {
	o := s.cfg.MaxOverhead
	if o <= 0 || o >= 1 || len(s.costs) == 0 {
		return time.Time{}
	}
	last := s.costs[len(s.costs)-1]
	run := fromNanos(float64(last) * (1 - o) / o)
	next := s.lastSuccess.Add(run)
	if total := s.start.Add(fromNanos(float64(s.held) / o)); total.After(next) {
		next = total
	}
	return next
}

// Stretch tells whether the overhead cap puts the next checkpoint later
// than the policy's interval would, and the wait after the last checkpoint
// it gives instead (the agent says so in the job's events).
func (s *Scheduler) Stretch() (wait time.Duration, stretched bool) {
	next, ok := s.Next()
	if !ok || s.failures > 0 || s.lastSuccess.IsZero() {
		return 0, false
	}
	wait = next.Sub(s.lastSuccess)
	return wait, wait > s.Interval()
}

// Due reports whether a checkpoint should be taken at now.
func (s *Scheduler) Due(now time.Time) bool {
	next, ok := s.Next()
	return ok && !now.Before(next)
}

// Succeeded records a checkpoint that ended at `at` after holding the job for
// cost. It clears the failures: the next checkpoint is one interval later.
func (s *Scheduler) Succeeded(at time.Time, cost time.Duration) {
	s.lastSuccess = at
	s.held += max(cost, 0)
	s.failures = 0
	s.lastFailure = time.Time{}
	s.costs = append(s.costs, max(cost, 0))
	if len(s.costs) > costWindow {
		s.costs = append(s.costs[:0], s.costs[len(s.costs)-costWindow:]...)
	}
}

// Failed records a checkpoint attempt that failed at `at` after holding the
// job for held. Its cost does not feed ModeAuto (a failed dump says nothing
// reliable about the cost of a good one), but the hold counts against the
// overhead cap.
func (s *Scheduler) Failed(at time.Time, held time.Duration) {
	s.held += max(held, 0)
	s.lastFailure = at
	s.failures++
}

// Failures is the number of consecutive failures since the last success.
func (s *Scheduler) Failures() int { return s.failures }

// SetMTBF changes the failure rate ModeAuto optimises for, e.g. when nodes of
// the job are added or the cluster's measured failure rate changes.
func (s *Scheduler) SetMTBF(m time.Duration) { s.cfg.MTBF = m }

// SetConfig replaces the policy. The history (last success, pending failures,
// measured costs) is kept, so the new policy applies from what already
// happened rather than from now.
func (s *Scheduler) SetConfig(c Config) { s.cfg = c }

// Config is the policy the scheduler currently applies.
func (s *Scheduler) Config() Config { return s.cfg }
