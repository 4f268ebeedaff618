package agent

import (
	"testing"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/stretchr/testify/assert"
)

func TestGroupRanks(t *testing.T) {
	placed := []string{"n1", "n1", "n1", "n2", "n2"}
	assert.Equal(t, []rankGroup{{0, 1, "n1"}, {1, 1, "n1"}, {2, 1, "n1"}, {3, 1, "n2"}, {4, 1, "n2"}}, groupRanks(placed, 1))
	assert.Equal(t, []rankGroup{{0, 2, "n1"}, {2, 1, "n1"}, {3, 2, "n2"}}, groupRanks(placed, 2))
	assert.Equal(t, []rankGroup{{0, 3, "n1"}, {3, 2, "n2"}}, groupRanks(placed, 8), "never across nodes")
	assert.Equal(t, "j-r0-2", rankPodName("j", rankGroup{0, 3, "n1"}))
	assert.Equal(t, "j-r3", rankPodName("j", rankGroup{3, 1, "n2"}))
}

func TestValidateRanksPerPod(t *testing.T) {
	base := api.RunRequest{NP: 4, Argv: []string{"app"}, Dir: "/"}
	for _, k := range []int{-1, maxPodsPerJob + 1} {
		req := base
		req.RanksPerPod = k
		err := validateRun(&req)
		if assert.Error(t, err, "k=%d", k) {
			assert.Contains(t, err.Error(), "--ranks-per-pod")
		}
	}
	req := base
	req.Plain, req.NP, req.RanksPerPod = true, 1, 2
	assert.ErrorContains(t, validateRun(&req), "plain")
	req = base
	req.RanksPerPod = 2
	assert.NoError(t, validateRun(&req))
}

func TestPodSpecRanks(t *testing.T) {
	one := api.PodSpec{Role: api.RoleRank, Rank: 3}
	assert.Equal(t, []int{3}, one.RankList())
	two := api.PodSpec{Role: api.RoleRank, Rank: 2, Ranks: 2}
	assert.True(t, two.HoldsRank(3))
	assert.False(t, two.HoldsRank(4))
	assert.Equal(t, []int{2, 3}, two.RankList())
	assert.False(t, api.PodSpec{Role: api.RoleMpiexec}.HoldsRank(0))
}
