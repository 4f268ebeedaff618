package agent

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cruz-hpc/cruz/internal/config"
)

func TestGuardTargets(t *testing.T) {
	cfg := config.Default()
	ports, peers, err := guardTargets(cfg)
	require.NoError(t, err)
	assert.Empty(t, ports, "no TCP port, nothing to guard")
	assert.Empty(t, peers)

	// Metrics alone are guarded too.
	cfg.Metrics.Listen = "127.0.0.1:9170"
	ports, _, err = guardTargets(cfg)
	require.NoError(t, err)
	assert.Equal(t, []uint16{9170}, ports)

	cfg.Agent.Listen = "10.9.0.1:7170"
	cfg.Cluster.Peers = []string{"node2=10.9.0.2:7170", "node3=10.9.0.3:7171"}
	ports, peers, err = guardTargets(cfg)
	require.NoError(t, err)
	assert.Equal(t, []uint16{7170, 9170}, ports)
	assert.Equal(t, []netip.AddrPort{
		netip.MustParseAddrPort("10.9.0.2:7170"), netip.MustParseAddrPort("10.9.0.2:9170"),
		netip.MustParseAddrPort("10.9.0.3:7171"), netip.MustParseAddrPort("10.9.0.3:9170"),
	}, peers)
}
