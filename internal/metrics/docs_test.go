package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// families returns the names of every cruz_ metric, with every series made
// to exist at least once.
func families(t *testing.T) map[string]bool {
	t.Helper()
	m := New(Options{Node: "n1", Source: Source{
		Pods:      func() int { return 1 },
		JobStates: func() map[string]int { return map[string]int{"running": 1} },
		Store:     func() (int64, int64, error) { return 1, 1, nil },
	}})
	m.JobActive("j1", "alice", 1)
	m.CheckpointCommitted("j1", ckpt(1, 1, 1, 1, 1))
	m.CheckpointFailed("j1")
	m.Restored("j1", Restart, OK, time.Second)
	m.Restored("j1", Rollback, OK, time.Second)
	m.Migrated("j1", OK, time.Second)
	m.FailureDetected("j1")
	fams, err := m.Registry().Gather()
	require.NoError(t, err)
	out := map[string]bool{}
	for _, f := range fams {
		if strings.HasPrefix(f.GetName(), "cruz_") {
			out[f.GetName()] = true
		}
	}
	return out
}

var metricName = regexp.MustCompile(`\bcruz_[a-z_]+`)

// TestDashboardUsesOnlyRealMetrics: every metric the Grafana dashboard
// queries exists, so a renamed metric cannot leave a panel silently empty.
func TestDashboardUsesOnlyRealMetrics(t *testing.T) {
	data, err := os.ReadFile("../../docs/grafana-cruz.json")
	require.NoError(t, err)
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			ID      int    `json:"id"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(data, &dash))
	have := families(t)
	ids := map[int]bool{}
	queries := 0
	for _, p := range dash.Panels {
		assert.False(t, ids[p.ID], "panel id %d is used twice", p.ID)
		ids[p.ID] = true
		for _, tg := range p.Targets {
			queries++
			names := metricName.FindAllString(tg.Expr, -1)
			assert.NotEmpty(t, names, "panel %q: %s queries no cruz metric", p.Title, tg.Expr)
			for _, n := range names {
				base := n
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(n, suf); ok && have[b] {
						base = b
					}
				}
				assert.True(t, have[base], "panel %q queries %s, which cruzd does not export", p.Title, n)
			}
		}
	}
	assert.Greater(t, queries, 10)
}

// TestAdminGuideListsEveryMetric: the admin guide names every metric.
func TestAdminGuideListsEveryMetric(t *testing.T) {
	data, err := os.ReadFile("../../docs/admin-guide.md")
	require.NoError(t, err)
	var missing []string
	for n := range families(t) {
		if !strings.Contains(string(data), "`"+n) {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	assert.Empty(t, missing, "docs/admin-guide.md#metrics does not name these")
}
