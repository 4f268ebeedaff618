package agent

import (
	"testing"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/stretchr/testify/assert"
)

func TestPlaceRanks(t *testing.T) {
	tests := []struct {
		np    int
		nodes []string
		want  []string
	}{
		{8, []string{"n1", "n2", "n3", "n4"}, []string{"n1", "n1", "n2", "n2", "n3", "n3", "n4", "n4"}},
		{8, []string{"n3", "n4"}, []string{"n3", "n3", "n3", "n3", "n4", "n4", "n4", "n4"}},
		{3, []string{"n1", "n2", "n3", "n4"}, []string{"n1", "n2", "n3"}},
		{5, []string{"n1", "n2"}, []string{"n1", "n1", "n1", "n2", "n2"}},
		{1, []string{"n1"}, []string{"n1"}},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, placeRanks(tt.np, tt.nodes), "%d ranks on %v", tt.np, tt.nodes)
	}
}

func TestPlaceRestart(t *testing.T) {
	a := &Agent{node: "n1"}
	pods := func() []api.PodSpec {
		return []api.PodSpec{{Name: "j-mpiexec", Role: "mpiexec", Node: "n1"},
			{Name: "j-r0", Role: "rank", Node: "n1"}, {Name: "j-r1", Role: "rank", Node: ""}, {Name: "j-r2", Role: "rank", Node: "n1"}}
	}
	// Where they were; a pod of an old record (no node) goes to this node.
	p := pods()
	assert.NoError(t, a.place(p, nil))
	assert.Equal(t, []string{"n1", "n1", "n1", "n1"}, []string{p[0].Node, p[1].Node, p[2].Node, p[3].Node})
	// On chosen nodes: main pod on the first, ranks in blocks.
	a.cfg.Cluster.Peers = []string{"n2=10.0.0.2:7170", "n3=10.0.0.3:7170"}
	p = pods()
	assert.NoError(t, a.place(p, []string{"n3", "n2"}))
	assert.Equal(t, []string{"n3", "n3", "n3", "n2"}, []string{p[0].Node, p[1].Node, p[2].Node, p[3].Node})
	// A node the cluster does not have.
	p = pods()
	p[1].Node = "gone"
	err := a.place(p, nil)
	assert.ErrorContains(t, err, "node gone, which this cluster does not have: choose nodes with --nodes")
}
