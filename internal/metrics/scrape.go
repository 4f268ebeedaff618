package metrics

import (
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// scrapeCollector reads the node's state when Prometheus scrapes, so that
// no gauge has to be kept in step with every pod and job change.
type scrapeCollector struct {
	src   Source
	every time.Duration

	pods, jobs, storeUsed, storeFree, storeErr *prometheus.Desc

	mu       sync.Mutex
	measured time.Time
	used     int64
	free     int64
	err      error
}

func newScrapeCollector(o Options) *scrapeCollector {
	every := o.StoreEvery
	if every <= 0 {
		every = 30 * time.Second
	}
	return &scrapeCollector{
		src:   o.Source,
		every: every,
		pods:  prometheus.NewDesc("cruz_node_pods", "Pods on this node, of every job wherever it is coordinated.", nil, nil),
		jobs: prometheus.NewDesc("cruz_jobs", "Jobs this agent coordinates and remembers, by state (until cruz rm).",
			[]string{"state"}, nil),
		storeUsed: prometheus.NewDesc("cruz_store_bytes", "Bytes of the files in the checkpoint store (store.dir): measured again after this agent's checkpoints and removals, else at most every 30 s.", nil, nil),
		storeFree: prometheus.NewDesc("cruz_store_free_bytes", "Bytes free for cruzd on the checkpoint store's filesystem.", nil, nil),
		storeErr:  prometheus.NewDesc("cruz_store_measure_errors", "1 if the last measure of the checkpoint store failed (see the agent's log), else 0.", nil, nil),
	}
}

func (c *scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pods, c.jobs, c.storeUsed, c.storeFree, c.storeErr} {
		ch <- d
	}
}

func (c *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	if c.src.Pods != nil {
		ch <- prometheus.MustNewConstMetric(c.pods, prometheus.GaugeValue, float64(c.src.Pods()))
	}
	if c.src.JobStates != nil {
		states := c.src.JobStates()
		names := make([]string, 0, len(states))
		for s := range states {
			names = append(names, s)
		}
		sort.Strings(names)
		for _, s := range names {
			ch <- prometheus.MustNewConstMetric(c.jobs, prometheus.GaugeValue, float64(states[s]), s)
		}
	}
	if c.src.Store != nil {
		used, free, err := c.store()
		failed := 0.0
		if err != nil {
			failed = 1
		} else {
			ch <- prometheus.MustNewConstMetric(c.storeUsed, prometheus.GaugeValue, float64(used))
			ch <- prometheus.MustNewConstMetric(c.storeFree, prometheus.GaugeValue, float64(free))
		}
		ch <- prometheus.MustNewConstMetric(c.storeErr, prometheus.GaugeValue, failed)
	}
}

// storeChanged makes the next scrape measure the store again: this agent
// changed it (other nodes' changes to a shared store show within c.every).
func (c *scrapeCollector) storeChanged() {
	c.mu.Lock()
	c.measured = time.Time{}
	c.mu.Unlock()
}

// store measures the store at most once per c.every; concurrent scrapes
// wait for one measure instead of walking the store twice.
func (c *scrapeCollector) store() (int64, int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.measured.IsZero() || time.Since(c.measured) >= c.every {
		c.used, c.free, c.err = c.src.Store()
		c.measured = time.Now()
	}
	return c.used, c.free, c.err
}
