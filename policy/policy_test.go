package policy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cruz-hpc/cruz/policy"
)

// t0 is an arbitrary fixed instant: nothing in the package reads the clock.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// seconds converts a hand-computed number of seconds for comparison with
// InDelta, which is how the expected values below were worked out.
func seconds(d time.Duration) float64 { return d.Seconds() }

func TestDefaultConfig(t *testing.T) {
	c := policy.DefaultConfig()
	assert.Equal(t, policy.Config{
		Mode:          policy.ModeFixed,
		Interval:      10 * time.Minute,
		MTBF:          24 * time.Hour,
		MinInterval:   30 * time.Second,
		MaxInterval:   6 * time.Hour,
		MaxOverhead:   0.10,
		Keep:          3,
		RetryBase:     10 * time.Second,
		RetryMax:      5 * time.Minute,
		RestartBudget: 3,
		RestartWindow: time.Hour,
		RestartBase:   2 * time.Second,
		RestartMax:    2 * time.Minute,
	}, c)
	require.NoError(t, c.Validate())
}

func TestYoung(t *testing.T) {
	tests := []struct {
		name       string
		cost, mtbf time.Duration
		want       float64 // seconds
	}{
		// sqrt(2*60*86400) = sqrt(10368000) = 3219.9379...
		{"60s cost, 24h MTBF", 60 * time.Second, 24 * time.Hour, 3219.937887600},
		// sqrt(2*12*21600) = sqrt(518400) = 720 exactly
		{"12s cost, 6h MTBF", 12 * time.Second, 6 * time.Hour, 720},
		// sqrt(2*3600*3600) = 3600*sqrt(2) = 5091.1688...
		{"cost equal to MTBF", time.Hour, time.Hour, 5091.168824543},
		{"zero cost", 0, 24 * time.Hour, 0},
		{"zero MTBF", time.Minute, 0, 0},
		{"negative cost", -time.Minute, 24 * time.Hour, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.InDelta(t, tt.want, seconds(policy.Young(tt.cost, tt.mtbf)), 1e-6)
		})
	}
}

func TestDaly(t *testing.T) {
	tests := []struct {
		name       string
		cost, mtbf time.Duration
		want       float64 // seconds
	}{
		// x = C/(2M) = 1/3600, sqrt(x) = 1/60:
		// 720*(1 + 1/180 + 1/32400) - 12 = 720 + 4 + 0.0222... - 12 = 712.0222...
		{"12s cost, 6h MTBF", 12 * time.Second, 6 * time.Hour, 712.022222222},
		// x = 60/172800 = 3.4722e-4, sqrt(x)/3 = 6.2113e-3, x/9 = 3.858e-5:
		// 3219.9379*1.0062499 - 60 = 3180.0621...
		{"60s cost, 24h MTBF", 60 * time.Second, 24 * time.Hour, 3180.062113598},
		// x = 1/2: 5091.1688*(1 + 0.70711/3 + 0.05556) - 3600 = 2974.0115...
		{"cost equal to MTBF", time.Hour, time.Hour, 2974.011537017},
		{"cost exactly 2*MTBF returns MTBF", 2 * time.Hour, time.Hour, 3600},
		{"cost above 2*MTBF returns MTBF", 5 * time.Hour, time.Hour, 3600},
		{"zero cost", 0, time.Hour, 0},
		{"zero MTBF is never below 0", time.Minute, 0, 0},
		{"negative MTBF is never below 0", time.Minute, -time.Hour, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := policy.Daly(tt.cost, tt.mtbf)
			assert.InDelta(t, tt.want, seconds(got), 1e-6)
			assert.GreaterOrEqual(t, got, time.Duration(0))
		})
	}
}

// autoConfig is an auto policy whose Daly optimum for a 12s cost is 712.02s,
// well inside the clamps.
func autoConfig() policy.Config {
	c := policy.DefaultConfig()
	c.Mode = policy.ModeAuto
	c.MTBF = 6 * time.Hour
	return c
}

func TestSchedulerInterval(t *testing.T) {
	daly12s6h := policy.Daly(12*time.Second, 6*time.Hour)
	tests := []struct {
		name  string
		edit  func(*policy.Config)
		costs []time.Duration
		want  time.Duration
	}{
		{"fixed uses Interval", func(c *policy.Config) { c.Mode = policy.ModeFixed }, nil, 10 * time.Minute},
		{"fixed ignores costs", func(c *policy.Config) { c.Mode = policy.ModeFixed }, []time.Duration{time.Hour}, 10 * time.Minute},
		{"fixed is not clamped", func(c *policy.Config) { c.Mode = policy.ModeFixed; c.Interval = 10 * time.Second }, nil, 10 * time.Second},
		{"off has no period", func(c *policy.Config) { c.Mode = policy.ModeOff }, []time.Duration{time.Second}, 0},
		{"auto before any cost uses Interval", nil, nil, 10 * time.Minute},
		{"auto before any cost clamps Interval up", func(c *policy.Config) { c.Interval = 5 * time.Second }, nil, 30 * time.Second},
		{"auto before any cost clamps Interval down", func(c *policy.Config) { c.Interval = 10 * time.Hour }, nil, 6 * time.Hour},
		{"auto uses Daly of the cost", nil, []time.Duration{12 * time.Second}, daly12s6h},
		{"auto uses Daly of the mean cost", nil, []time.Duration{4 * time.Second, 20 * time.Second}, daly12s6h},
		{"auto clamps to MinInterval", func(c *policy.Config) { c.MinInterval = 15 * time.Minute }, []time.Duration{12 * time.Second}, 15 * time.Minute},
		{"auto clamps to MaxInterval", func(c *policy.Config) { c.MaxInterval = 5 * time.Minute }, []time.Duration{12 * time.Second}, 5 * time.Minute},
		{"auto with cost >= 2*MTBF gets MTBF", func(c *policy.Config) { c.MTBF = time.Minute }, []time.Duration{3 * time.Minute}, time.Minute},
		{"auto ignores an unset MaxInterval", func(c *policy.Config) { c.MaxInterval = 0 }, []time.Duration{12 * time.Second}, daly12s6h},
		{"auto negative cost counts as 0, clamped up", nil, []time.Duration{-time.Second}, 30 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := autoConfig()
			if tt.edit != nil {
				tt.edit(&c)
			}
			s := policy.NewScheduler(c, t0)
			for i, cost := range tt.costs {
				s.Succeeded(t0.Add(time.Duration(i+1)*time.Minute), cost)
			}
			assert.Equal(t, tt.want, s.Interval())
		})
	}
}

func TestSchedulerAutoFollowsCosts(t *testing.T) {
	const mtbf = 6 * time.Hour
	// Each step records one more success; want is Daly of the mean of the
	// last five costs, worked out by hand.
	steps := []struct {
		cost     time.Duration
		wantMean time.Duration
	}{
		{100 * time.Second, 100 * time.Second},
		{12 * time.Second, 56 * time.Second}, // (100+12)/2
		{12 * time.Second, 124 * time.Second / 3},
		{12 * time.Second, 34 * time.Second},         // (100+36)/4
		{14 * time.Second, 30 * time.Second},         // (100+36+14)/5
		{10 * time.Second, 12 * time.Second},         // 100 drops out: (12+12+12+14+10)/5
		{60 * time.Second, 21600 * time.Millisecond}, // (12+12+14+10+60)/5
	}
	s := policy.NewScheduler(autoConfig(), t0)
	_, ok := s.MeanCost()
	require.False(t, ok, "no cost before the first success")
	at := t0
	for i, st := range steps {
		at = at.Add(time.Hour)
		s.Succeeded(at, st.cost)
		mean, ok := s.MeanCost()
		require.True(t, ok)
		assert.Equal(t, st.wantMean, mean, "step %d", i)
		assert.Equal(t, policy.Daly(st.wantMean, mtbf), s.Interval(), "step %d", i)
		next, ok := s.Next()
		require.True(t, ok)
		assert.Equal(t, at.Add(s.Interval()), next, "step %d", i)
	}
	// The hand-computed value for the 12s mean: 712.0222s.
	s2 := policy.NewScheduler(autoConfig(), t0)
	for _, c := range []time.Duration{100, 12, 12, 12, 12, 12} {
		s2.Succeeded(t0, c*time.Second)
	}
	assert.InDelta(t, 712.022222222, s2.Interval().Seconds(), 1e-6)
}

func TestSchedulerAutoFollowsMTBF(t *testing.T) {
	c := autoConfig()
	c.MaxOverhead = 1 // a 60 s cost would stretch the short intervals (TestSchedulerOverheadCap)
	s := policy.NewScheduler(c, t0)
	s.Succeeded(t0, 60*time.Second)
	tests := []struct {
		name string
		mtbf time.Duration
		want float64 // seconds
	}{
		{"24h", 24 * time.Hour, 3180.062113598}, // as in TestDaly
		// x = 60/43200 = 1/720: 1609.9689*(1 + 0.0124226 + 0.0001543) - 60 = 1570.2174...
		{"6h", 6 * time.Hour, 1570.217395797},
		{"tiny MTBF clamps to MinInterval", 10 * time.Second, 30},
		{"huge MTBF clamps to MaxInterval", 10000 * time.Hour, 6 * 3600},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.SetMTBF(tt.mtbf)
			assert.InDelta(t, tt.want, s.Interval().Seconds(), 1e-6)
			next, ok := s.Next()
			require.True(t, ok)
			assert.Equal(t, t0.Add(s.Interval()), next, "Next follows the new MTBF at once")
		})
	}
}

func TestSchedulerNext(t *testing.T) {
	// Fixed 10m period, retries after 10s doubling, capped at 5m.
	type event struct {
		after time.Duration // since t0
		ok    bool
		cost  time.Duration
	}
	success := func(after time.Duration) event { return event{after: after, ok: true, cost: time.Second} }
	failure := func(after time.Duration) event { return event{after: after} }
	tests := []struct {
		name         string
		events       []event
		wantNext     time.Duration // since t0
		wantFailures int
	}{
		{"first checkpoint one interval after start", nil, 10 * time.Minute, 0},
		{"after a success", []event{success(11 * time.Minute)}, 21 * time.Minute, 0},
		{"first failure retries after RetryBase", []event{failure(10 * time.Minute)}, 10*time.Minute + 10*time.Second, 1},
		{"second failure doubles", []event{failure(10 * time.Minute), failure(11 * time.Minute)}, 11*time.Minute + 20*time.Second, 2},
		{"third failure doubles again", []event{failure(10 * time.Minute), failure(11 * time.Minute), failure(12 * time.Minute)}, 12*time.Minute + 40*time.Second, 3},
		{
			"sixth failure is capped at RetryMax (10s*32 = 320s > 5m)",
			[]event{failure(1 * time.Minute), failure(2 * time.Minute), failure(3 * time.Minute), failure(4 * time.Minute), failure(5 * time.Minute), failure(6 * time.Minute)},
			11 * time.Minute, 6,
		},
		{
			"fifth failure is just under the cap (10s*16 = 160s)",
			[]event{failure(1 * time.Minute), failure(2 * time.Minute), failure(3 * time.Minute), failure(4 * time.Minute), failure(5 * time.Minute)},
			5*time.Minute + 160*time.Second, 5,
		},
		{"a success resets the backoff", []event{failure(10 * time.Minute), failure(11 * time.Minute), success(12 * time.Minute)}, 22 * time.Minute, 0},
		{
			"a failure after a success starts over at RetryBase",
			[]event{failure(10 * time.Minute), failure(11 * time.Minute), success(12 * time.Minute), failure(22 * time.Minute)},
			22*time.Minute + 10*time.Second, 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := policy.NewScheduler(policy.DefaultConfig(), t0)
			for _, e := range tt.events {
				if e.ok {
					s.Succeeded(t0.Add(e.after), e.cost)
				} else {
					s.Failed(t0.Add(e.after), 0)
				}
			}
			next, ok := s.Next()
			require.True(t, ok)
			assert.Equal(t, t0.Add(tt.wantNext), next)
			assert.Equal(t, tt.wantFailures, s.Failures())
		})
	}
}

func TestSchedulerBackoffDoesNotOverflow(t *testing.T) {
	c := policy.DefaultConfig()
	c.RetryMax = time.Duration(1<<63 - 1)
	s := policy.NewScheduler(c, t0)
	for i := 0; i < 200; i++ {
		s.Failed(t0, 0)
	}
	next, ok := s.Next()
	require.True(t, ok)
	assert.True(t, next.After(t0), "a long run of failures must not wrap the delay around to negative")
}

func TestSchedulerDue(t *testing.T) {
	s := policy.NewScheduler(policy.DefaultConfig(), t0)
	tests := []struct {
		name string
		now  time.Duration // since t0
		want bool
	}{
		{"at start", 0, false},
		{"just before the period", 10*time.Minute - time.Nanosecond, false},
		{"exactly at the period", 10 * time.Minute, true},
		{"late", time.Hour, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, s.Due(t0.Add(tt.now)))
		})
	}

	t.Run("a pending retry is due before the period", func(t *testing.T) {
		s := policy.NewScheduler(policy.DefaultConfig(), t0)
		s.Failed(t0.Add(time.Minute), 0)
		assert.False(t, s.Due(t0.Add(time.Minute+9*time.Second)))
		assert.True(t, s.Due(t0.Add(time.Minute+10*time.Second)))
	})
}

func TestSchedulerOff(t *testing.T) {
	c := policy.DefaultConfig()
	c.Mode = policy.ModeOff
	s := policy.NewScheduler(c, t0)
	tests := []struct {
		name   string
		record func()
	}{
		{"fresh", func() {}},
		{"after a success", func() { s.Succeeded(t0.Add(time.Minute), time.Second) }},
		{"after a failure", func() { s.Failed(t0.Add(2*time.Minute), 0) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.record()
			next, ok := s.Next()
			assert.False(t, ok)
			assert.True(t, next.IsZero())
			assert.False(t, s.Due(t0.Add(1000*time.Hour)))
			assert.Zero(t, s.Interval())
		})
	}
}

func TestSchedulerZeroIntervalIsNotContinuous(t *testing.T) {
	c := policy.DefaultConfig()
	c.Interval = 0 // refused by Validate; the scheduler must still not checkpoint back to back
	s := policy.NewScheduler(c, t0)
	_, ok := s.Next()
	assert.False(t, ok)
	assert.False(t, s.Due(t0.Add(time.Hour)))
}

func TestSchedulerSetConfig(t *testing.T) {
	s := policy.NewScheduler(policy.DefaultConfig(), t0)
	s.Succeeded(t0.Add(10*time.Minute), 12*time.Second)
	s.Failed(t0.Add(20*time.Minute), 0)

	tests := []struct {
		name     string
		edit     func(*policy.Config)
		wantOK   bool
		wantNext time.Duration // since t0
	}{
		{"longer retry base applies to the pending failure", func(c *policy.Config) { c.RetryBase = time.Minute }, true, 21 * time.Minute},
		{"off stops the schedule", func(c *policy.Config) { c.Mode = policy.ModeOff }, false, 0},
		{"back to fixed resumes the retry", func(c *policy.Config) {}, true, 20*time.Minute + 10*time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := policy.DefaultConfig()
			tt.edit(&c)
			s.SetConfig(c)
			assert.Equal(t, c, s.Config())
			next, ok := s.Next()
			require.Equal(t, tt.wantOK, ok)
			if ok {
				assert.Equal(t, t0.Add(tt.wantNext), next)
			}
			assert.Equal(t, 1, s.Failures(), "history survives a policy change")
		})
	}

	t.Run("switching to auto uses the costs measured so far", func(t *testing.T) {
		s.Succeeded(t0.Add(30*time.Minute), 12*time.Second)
		s.SetConfig(autoConfig())
		assert.Equal(t, policy.Daly(12*time.Second, 6*time.Hour), s.Interval())
		next, ok := s.Next()
		require.True(t, ok)
		assert.Equal(t, t0.Add(30*time.Minute).Add(s.Interval()), next)
	})
}

func TestPrune(t *testing.T) {
	// cps builds checkpoints a, b, c, ... one hour apart, oldest first.
	cps := func(sizes ...int64) []policy.Checkpoint {
		out := make([]policy.Checkpoint, len(sizes))
		for i, b := range sizes {
			out[i] = policy.Checkpoint{ID: string(rune('a' + i)), Created: t0.Add(time.Duration(i) * time.Hour), Bytes: b}
		}
		return out
	}
	tests := []struct {
		name     string
		list     []policy.Checkpoint
		keep     int
		maxBytes int64
		protect  map[string]bool
		want     []string
	}{
		{"empty list", nil, 3, 0, nil, nil},
		{"keep more than there are", cps(1, 1), 3, 0, nil, nil},
		{"keep exactly as many", cps(1, 1, 1), 3, 0, nil, nil},
		{"keep only, oldest first", cps(1, 1, 1, 1, 1), 2, 0, nil, []string{"a", "b", "c"}},
		{"keep below 1 still keeps the newest", cps(1, 1, 1), 0, 0, nil, []string{"a", "b"}},
		{"under the byte cap", cps(10, 10, 10), 3, 30, nil, nil},
		{"cap by bytes deletes the oldest kept", cps(10, 10, 10), 3, 25, nil, []string{"a"}},
		{"cap by bytes after keep", cps(10, 10, 10, 10, 10), 3, 15, nil, []string{"a", "b", "c", "d"}},
		{"never the newest, even over the cap", cps(10, 10, 100), 3, 50, nil, []string{"a", "b"}},
		{"single checkpoint over the cap stays", cps(100), 1, 1, nil, nil},
		{"protect survives keep", cps(1, 1, 1, 1), 1, 0, map[string]bool{"b": true}, []string{"a", "c"}},
		{"protect survives the cap and still counts", cps(10, 10, 10), 3, 15, map[string]bool{"a": true}, []string{"b"}},
		{"cap skips protected, takes the next oldest", cps(50, 10, 10, 10), 4, 70, map[string]bool{"a": true}, []string{"b"}},
		{"everything protected", cps(10, 10, 10), 1, 1, map[string]bool{"a": true, "b": true, "c": true}, nil},
		{"protecting an unknown ID is harmless", cps(1, 1, 1), 1, 0, map[string]bool{"zz": true}, []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, policy.Prune(tt.list, tt.keep, tt.maxBytes, tt.protect))
		})
	}

	t.Run("a mis-ordered list does not lose the newest", func(t *testing.T) {
		list := cps(1, 1, 1)
		list[0], list[2] = list[2], list[0] // c, b, a
		assert.Equal(t, []string{"a", "b"}, policy.Prune(list, 1, 0, nil))
		assert.Equal(t, "c", list[0].ID, "the caller's slice is not reordered")
	})
}

func TestRestarts(t *testing.T) {
	c := policy.DefaultConfig() // budget 3 per 1h; the first at once, then 2s doubling, capped at 2m
	type step struct {
		at        time.Duration // since t0
		record    bool          // record a restart at `at` after checking
		wantOK    bool
		wantDelay time.Duration
		wantCount int // restarts in the window at `at`, before recording
	}
	tests := []struct {
		name  string
		cfg   func(*policy.Config)
		steps []step
	}{
		{
			name: "budget of 3, the first at once, then doubling delays, then giving up",
			steps: []step{
				{at: 0, record: true, wantOK: true, wantDelay: 0, wantCount: 0},
				{at: 10 * time.Minute, record: true, wantOK: true, wantDelay: 2 * time.Second, wantCount: 1},
				{at: 20 * time.Minute, record: true, wantOK: true, wantDelay: 4 * time.Second, wantCount: 2},
				{at: 30 * time.Minute, wantOK: false, wantCount: 3},
			},
		},
		{
			name: "the window slides: the oldest restart falls out after an hour",
			steps: []step{
				{at: 0, record: true, wantOK: true, wantDelay: 0},
				{at: 10 * time.Minute, record: true, wantOK: true, wantDelay: 2 * time.Second, wantCount: 1},
				{at: 20 * time.Minute, record: true, wantOK: true, wantDelay: 4 * time.Second, wantCount: 2},
				{at: time.Hour - time.Nanosecond, wantOK: false, wantCount: 3},
				{at: time.Hour, record: true, wantOK: true, wantDelay: 4 * time.Second, wantCount: 2}, // exactly 1h old is out
				{at: time.Hour + 5*time.Minute, wantOK: false, wantCount: 3},
				{at: 3 * time.Hour, wantOK: true, wantDelay: 0, wantCount: 0},
			},
		},
		{
			name: "the delay is capped at RestartMax",
			cfg:  func(c *policy.Config) { c.RestartBudget = 10; c.RestartBase = 30 * time.Second },
			steps: []step{
				{at: 0, record: true, wantOK: true, wantDelay: 0},
				{at: time.Minute, record: true, wantOK: true, wantDelay: 30 * time.Second, wantCount: 1},
				{at: 2 * time.Minute, record: true, wantOK: true, wantDelay: time.Minute, wantCount: 2},
				{at: 3 * time.Minute, record: true, wantOK: true, wantDelay: 2 * time.Minute, wantCount: 3},
				{at: 4 * time.Minute, record: true, wantOK: true, wantDelay: 2 * time.Minute, wantCount: 4},
			},
		},
		{
			name: "a budget of 0 disables automatic restarts",
			cfg:  func(c *policy.Config) { c.RestartBudget = 0 },
			steps: []step{
				{at: 0, wantOK: false},
			},
		},
		{
			name: "a restart recorded in the future still counts",
			steps: []step{
				{at: 2 * time.Hour, record: true, wantOK: true, wantDelay: 0},
				{at: 0, wantOK: true, wantDelay: 2 * time.Second, wantCount: 1},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := c
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			var r policy.Restarts
			for i, st := range tt.steps {
				now := t0.Add(st.at)
				assert.Equal(t, st.wantCount, r.Count(cfg, now), "step %d: count", i)
				delay, ok, reason := r.Allow(cfg, now)
				assert.Equal(t, st.wantOK, ok, "step %d: ok", i)
				assert.Equal(t, st.wantDelay, delay, "step %d: delay", i)
				if ok {
					assert.Empty(t, reason, "step %d", i)
				} else {
					assert.NotEmpty(t, reason, "step %d", i)
				}
				if st.record {
					r.Record(now)
				}
			}
		})
	}
}

func TestRestartsReason(t *testing.T) {
	tests := []struct {
		name     string
		budget   int
		restarts int
		want     string
	}{
		{"budget used up", 3, 3, "3 automatic restarts in the last 1h0m0s (policy.restart_budget = 3): giving up"},
		{"singular", 1, 1, "1 automatic restart in the last 1h0m0s (policy.restart_budget = 1): giving up"},
		{"disabled", 0, 0, "automatic restarts are disabled (policy.restart_budget = 0)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := policy.DefaultConfig()
			c.RestartBudget = tt.budget
			var r policy.Restarts
			for i := 0; i < tt.restarts; i++ {
				r.Record(t0.Add(time.Duration(i) * time.Minute))
			}
			_, ok, reason := r.Allow(c, t0.Add(10*time.Minute))
			assert.False(t, ok)
			assert.Equal(t, tt.want, reason)
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*policy.Config)
		want []string // every line of the error, in order; nil for valid
	}{
		{"default", func(*policy.Config) {}, nil},
		{"auto default", func(c *policy.Config) { c.Mode = policy.ModeAuto }, nil},
		{"off does not need an interval", func(c *policy.Config) { c.Mode = policy.ModeOff; c.Interval = 0 }, nil},
		{"fixed does not need the auto fields", func(c *policy.Config) { c.MTBF, c.MinInterval, c.MaxInterval = 0, 0, 0 }, nil},
		{"zero restart delays and budget are accepted", func(c *policy.Config) { c.RestartBudget, c.RestartBase, c.RestartMax = 0, 0, 0 }, nil},
		{"keep", func(c *policy.Config) { c.Keep = 0 }, []string{
			"policy.keep: 0 is not an integer >= 1 (example: 3)",
		}},
		{"mode", func(c *policy.Config) { c.Mode = "daily" }, []string{
			`policy.mode: "daily" is not one of "fixed", "auto" or "off" (example: "fixed")`,
		}},
		{"empty mode", func(c *policy.Config) { c.Mode = "" }, []string{
			`policy.mode: "" is not one of "fixed", "auto" or "off" (example: "fixed")`,
		}},
		{"fixed needs an interval", func(c *policy.Config) { c.Interval = 0 }, []string{
			`policy.interval: "0s" is not a duration greater than zero (example: "10m")`,
		}},
		{"negative interval even when off", func(c *policy.Config) { c.Mode = policy.ModeOff; c.Interval = -time.Minute }, []string{
			`policy.interval: "-1m" is not a duration >= 0 (example: "10m")`,
		}},
		{"auto needs MTBF and clamps", func(c *policy.Config) { c.Mode = policy.ModeAuto; c.MTBF, c.MinInterval, c.MaxInterval = 0, 0, 0 }, []string{
			`policy.mtbf: "0s" is not a duration greater than zero (example: "24h")`,
			`policy.min_interval: "0s" is not a duration greater than zero (example: "30s")`,
			`policy.max_interval: "0s" is not a duration greater than zero (example: "6h")`,
		}},
		{"auto clamps in the wrong order", func(c *policy.Config) {
			c.Mode = policy.ModeAuto
			c.MinInterval, c.MaxInterval = time.Hour, 30*time.Minute
		}, []string{
			`policy.max_interval: "30m" is not a duration >= policy.min_interval ("1h") (example: "6h")`,
		}},
		{"max_bytes", func(c *policy.Config) { c.MaxBytes = -1 }, []string{
			"policy.max_bytes: -1 is not an integer >= 0, where 0 means no cap (example: 0, or 53687091200 for 50 GiB)",
		}},
		{"retry max below base", func(c *policy.Config) { c.RetryBase, c.RetryMax = time.Minute, 30*time.Second }, []string{
			`policy.retry_max: "30s" is not a duration >= policy.retry_base ("1m") (example: "5m")`,
		}},
		{"restart fields", func(c *policy.Config) {
			c.RestartBudget, c.RestartWindow, c.RestartBase, c.RestartMax = -1, 0, -time.Second, time.Second
		}, []string{
			"policy.restart_budget: -1 is not an integer >= 0, where 0 disables automatic restarts (example: 3)",
			`policy.restart_window: "0s" is not a duration greater than zero (example: "1h")`,
			`policy.restart_base: "-1s" is not a duration >= 0 (example: "2s")`,
		}},
		{"restart max below base", func(c *policy.Config) { c.RestartBase, c.RestartMax = time.Minute, time.Second }, []string{
			`policy.restart_max: "1s" is not a duration >= policy.restart_base ("1m") (example: "2m")`,
		}},
		{"everything at once", func(c *policy.Config) { *c = policy.Config{Mode: policy.ModeAuto} }, []string{
			`policy.interval: "0s" is not a duration greater than zero (example: "10m")`,
			`policy.mtbf: "0s" is not a duration greater than zero (example: "24h")`,
			`policy.min_interval: "0s" is not a duration greater than zero (example: "30s")`,
			`policy.max_interval: "0s" is not a duration greater than zero (example: "6h")`,
			"policy.max_overhead: 0 is not a fraction of the job's time above 0 and at most 1 (1: no cap) (example: 0.1)",
			"policy.keep: 0 is not an integer >= 1 (example: 3)",
			`policy.retry_base: "0s" is not a duration greater than zero (example: "10s")`,
			`policy.retry_max: "0s" is not a duration greater than zero (example: "5m")`,
			`policy.restart_window: "0s" is not a duration greater than zero (example: "1h")`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := policy.DefaultConfig()
			tt.edit(&c)
			err := c.Validate()
			if tt.want == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Equal(t, tt.want, strings.Split(err.Error(), "\n"))
		})
	}
}

// TestSchedulerOverheadCap: whatever the interval, the holds stay within
// MaxOverhead of the job's time: the run after a checkpoint is at least
// hold*(1-o)/o, and all holds since the start at most o of the time since.
func TestSchedulerOverheadCap(t *testing.T) {
	fixed := func(interval time.Duration, o float64) policy.Config {
		c := policy.DefaultConfig()
		c.Interval, c.MaxOverhead = interval, o
		return c
	}
	type ck struct{ at, held time.Duration } // successes, since t0
	for _, tt := range []struct {
		name      string
		cfg       policy.Config
		cks       []ck
		wantNext  time.Duration // since t0
		stretched bool
	}{
		{"fast checkpoints keep the interval", fixed(10*time.Second, 0.1), []ck{{10 * time.Second, 100 * time.Millisecond}}, 20 * time.Second, false},
		// 1 s + 9 x 1.5 s = 14.5 s, but 1.5 s held in all wants 15 s.
		{"a slow one stretches it", fixed(time.Second, 0.1), []ck{{time.Second, 1500 * time.Millisecond}}, 15 * time.Second, true},
		{"the last hold is followed by 9x its run", fixed(time.Second, 0.1),
			[]ck{{20 * time.Second, 100 * time.Millisecond}, {40 * time.Second, 2 * time.Second}}, 40*time.Second + 18*time.Second, true},
		{"no cap at 1", fixed(time.Second, 1), []ck{{time.Second, 5 * time.Second}}, 2 * time.Second, false},
		{"a quarter", fixed(time.Second, 0.25), []ck{{10 * time.Second, 2 * time.Second}}, 10*time.Second + 6*time.Second, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := policy.NewScheduler(tt.cfg, t0)
			for _, c := range tt.cks {
				s.Succeeded(t0.Add(c.at), c.held)
			}
			next, ok := s.Next()
			require.True(t, ok)
			assert.Equal(t, tt.wantNext, next.Sub(t0))
			wait, stretched := s.Stretch()
			assert.Equal(t, tt.stretched, stretched)
			assert.Equal(t, tt.wantNext-tt.cks[len(tt.cks)-1].at, wait)
		})
	}

	// A job checkpointed as soon as it may, by a policy asking for every
	// second, with holds that grow: whenever a checkpoint starts, the holds
	// so far are within 10 % of the job's time.
	s := policy.NewScheduler(fixed(time.Second, 0.1), t0)
	held := time.Duration(0)
	for i := 0; i < 50; i++ {
		next, _ := s.Next()
		require.LessOrEqual(t, held.Seconds()/next.Sub(t0).Seconds(), 0.1+1e-9, "at checkpoint %d", i+1)
		h := time.Duration(200+100*i) * time.Millisecond
		held += h
		s.Succeeded(next.Add(h), h)
	}

	// Failed checkpoints hold the job too.
	s = policy.NewScheduler(fixed(time.Second, 0.1), t0)
	s.Succeeded(t0.Add(time.Second), 100*time.Millisecond)
	s.Failed(t0.Add(3*time.Second), 5*time.Second)
	s.Succeeded(t0.Add(4*time.Second), 100*time.Millisecond)
	next, _ := s.Next()
	assert.Equal(t, 52*time.Second, next.Sub(t0), "5.2 s held in all wants 52 s of the job's time")
}
