package node

import (
	"context"
	"net/netip"

	"github.com/cruz-hpc/cruz/internal/pod"
)

// GuardAgentPort keeps the node's pods from the agent's own TCP ports (its
// API and its metrics) and from peers' addresses and ports; see
// pod.GuardAgentPort. The agent reaches pods only through this package.
func GuardAgentPort(ctx context.Context, ports []uint16, peers []netip.AddrPort) error {
	return pod.GuardAgentPort(ctx, ports, peers)
}

// UnguardAgentPort removes the guard when the agent stops.
func UnguardAgentPort(ctx context.Context) error { return pod.UnguardAgentPort(ctx) }
