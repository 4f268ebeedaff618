package node

import (
	"context"
	"net/netip"

	"github.com/cruz-hpc/cruz/internal/pod"
)

// GuardAgentPort keeps the node's pods from the agents' TCP port (this
// agent's, listening on listen, and its peers'); see pod.GuardAgentPort.
// The agent reaches pods only through this package.
func GuardAgentPort(ctx context.Context, listen netip.AddrPort, peers []netip.AddrPort) error {
	return pod.GuardAgentPort(ctx, listen, peers)
}

// UnguardAgentPort removes the guard when the agent stops.
func UnguardAgentPort(ctx context.Context) error { return pod.UnguardAgentPort(ctx) }
