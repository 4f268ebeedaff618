package agent

// The coordinator's protocol against many simulated nodes (issue 14.7): the
// real coordinator (checkpointLocked, onNodes) drives fake nodes
// (fakes_test.go) that take a simulated time for each operation, so that
// what grows with the node count is the coordinator's own cost: fanning
// requests out, collecting answers, preparing and committing the
// checkpoint. Not a test: `make bench-scale` runs it and prints a table
// (and a CSV with CRUZ_BENCH_CSV=FILE).
//
// Knobs (environment):
//
//	CRUZ_SIM_NODES  node counts, comma-separated (default 16,64,256,1024,4096)
//	CRUZ_SIM_OP_MS  a node's time for one block or resume (default 5): each
//	                call takes it times a uniform factor in [0.5, 1.5)
//	CRUZ_SIM_DUMP_MS a node's dump time (default 50, same spread)
//	CRUZ_SIM_FAIL   chance that a node fails its dump in a checkpoint (default 0)

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
)

// scaleRound is what one checkpoint's fan-outs cost, from the fake nodes'
// call log.
type scaleRound struct {
	setup, block, dump, resume, commit time.Duration
	// slowest is the sum, over the four block and resume rounds, of the
	// slowest node's simulated time: what a perfect coordinator would take.
	slowest time.Duration
	failed  bool
}

// overhead is the coordinator's own cost of holding and releasing the job,
// beyond what its slowest nodes take.
func (r scaleRound) overhead() time.Duration { return r.block + r.resume - r.slowest }

func BenchmarkProtocolScale(b *testing.B) {
	counts := envInts(b, "CRUZ_SIM_NODES", []int{16, 64, 256, 1024, 4096})
	opMS := envFloat(b, "CRUZ_SIM_OP_MS", 5)
	dumpMS := envFloat(b, "CRUZ_SIM_DUMP_MS", 50)
	failRate := envFloat(b, "CRUZ_SIM_FAIL", 0)
	rows := map[int]string{} // b.Run runs each size more than once: the last counts
	for _, n := range counts {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			names := make([]string, n)
			for i := range names {
				names[i] = fmt.Sprintf("n%04d", i)
			}
			a, fc := newTestAgent(b, names...)
			where := map[string]string{"mpiexec": names[0]}
			for i := range names {
				where[fmt.Sprintf("r%d", i)] = names[i]
			}
			j := addJob(b, a, fc, "scale", where)
			a.cfg.Policy.Keep = 1
			spread := func(ms float64) time.Duration {
				return time.Duration(ms * (0.5 + rand.Float64()) * float64(time.Millisecond))
			}
			fc.latency = func(op api.NodeOp) time.Duration {
				switch op {
				case api.OpBlock, api.OpResume:
					return spread(opMS)
				case api.OpDump:
					return spread(dumpMS)
				}
				return 0
			}
			var got []scaleRound
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				fc.set(func() {
					fc.calls = nil
					for _, nd := range fc.nodes {
						delete(nd.fail, api.OpDump)
						if rand.Float64() < failRate {
							nd.fail[api.OpDump] = fmt.Errorf("simulated dump failure")
						}
					}
				})
				t0 := time.Now()
				_, err := a.checkpointLocked(context.Background(), j, false)
				end := time.Now()
				r := scaleRoundOf(fc, t0, end)
				r.failed = err != nil
				got = append(got, r)
			}
			b.StopTimer()
			r := medianRound(got)
			b.ReportMetric(ms(r.block), "block-ms")
			b.ReportMetric(ms(r.resume), "resume-ms")
			b.ReportMetric(ms(r.overhead()), "overhead-ms")
			b.ReportMetric(ms(r.setup), "setup-ms")
			b.ReportMetric(ms(r.commit), "commit-ms")
			failed := 0
			for _, g := range got {
				if g.failed {
					failed++
				}
			}
			rows[n] = (fmt.Sprintf("%d,%d,%d,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f",
				n, len(got), failed, ms(r.setup), ms(r.block), ms(r.dump), ms(r.resume), ms(r.slowest), ms(r.overhead()), ms(r.commit)))
		})
	}
	var lines []string
	for _, n := range counts {
		lines = append(lines, rows[n])
	}
	header := "nodes,checkpoints,failed,setup_ms,block_ms,dump_ms,resume_ms,slowest_nodes_ms,overhead_ms,commit_ms"
	fmt.Printf("\nprotocol against simulated nodes (op %.1f ms, dump %.1f ms, each x[0.5,1.5); failure rate %.3f; medians)\n%s\n%s\n",
		opMS, dumpMS, failRate, header, strings.Join(lines, "\n"))
	if f := os.Getenv("CRUZ_BENCH_CSV"); f != "" {
		if err := os.WriteFile(f, []byte(header+"\n"+strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// scaleRoundOf reads one checkpoint's rounds from the fake nodes' calls.
func scaleRoundOf(fc *fakeCluster, t0, end time.Time) scaleRound {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	type span struct {
		from, to time.Time
		slowest  time.Duration
	}
	spans := map[string]*span{}
	for _, c := range fc.calls {
		key := string(c.Op)
		if c.OutputOnly || c.InputOnly {
			key += "+half"
		}
		s := spans[key]
		if s == nil {
			s = &span{from: c.At, to: c.End}
			spans[key] = s
		}
		if c.At.Before(s.from) {
			s.from = c.At
		}
		if c.End.After(s.to) {
			s.to = c.End
		}
		s.slowest = max(s.slowest, c.Lat)
	}
	var r scaleRound
	get := func(k string) *span {
		if s := spans[k]; s != nil {
			return s
		}
		return &span{from: end, to: end}
	}
	bo, bi := get("block+half"), get("block")
	d := get("dump")
	ri, ro := get("resume+half"), get("resume")
	r.setup = bo.from.Sub(t0)
	r.block = bi.to.Sub(bo.from)
	r.dump = d.to.Sub(d.from)
	r.resume = ro.to.Sub(ri.from)
	r.commit = end.Sub(ro.to)
	r.slowest = bo.slowest + bi.slowest + ri.slowest + ro.slowest
	return r
}

// medianRound is the median of each measure on its own.
func medianRound(rs []scaleRound) scaleRound {
	med := func(f func(scaleRound) time.Duration) time.Duration {
		v := make([]time.Duration, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		for i := range v { // insertion sort: a handful of rounds
			for k := i; k > 0 && v[k] < v[k-1]; k-- {
				v[k], v[k-1] = v[k-1], v[k]
			}
		}
		return v[len(v)/2]
	}
	return scaleRound{
		setup:   med(func(r scaleRound) time.Duration { return r.setup }),
		block:   med(func(r scaleRound) time.Duration { return r.block }),
		dump:    med(func(r scaleRound) time.Duration { return r.dump }),
		resume:  med(func(r scaleRound) time.Duration { return r.resume }),
		commit:  med(func(r scaleRound) time.Duration { return r.commit }),
		slowest: med(func(r scaleRound) time.Duration { return r.slowest }),
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func envInts(b *testing.B, key string, def []int) []int {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 65536 {
			b.Fatalf("%s=%q: want node counts from 1 to 65536, comma-separated", key, v)
		}
		out = append(out, n)
	}
	return out
}

func envFloat(b *testing.B, key string, def float64) float64 {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 {
		b.Fatalf("%s=%q: want a number >= 0", key, v)
	}
	return f
}
