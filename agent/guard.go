package agent

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/cruz-hpc/cruz/internal/config"
	"github.com/cruz-hpc/cruz/internal/node"
)

// guardTargets lists what the pods' guard keeps pods from: the agent's own
// TCP ports (agent.listen's and metrics.listen's, on whatever address) and
// each peer's agent port on its address. A peer's metrics port is not in
// its cluster.peers entry; nodes of one cluster share their configuration
// (cruz cluster up writes them alike), so this node's metrics port is
// guarded on every peer's address too.
func guardTargets(cfg config.Config) (ports []uint16, peers []netip.AddrPort, err error) {
	var metrics uint16
	if l := cfg.Agent.Listen; l != "" {
		ap, err := netip.ParseAddrPort(l)
		if err != nil {
			return nil, nil, fmt.Errorf("agent.listen %q: %w", l, err)
		}
		ports = append(ports, ap.Port())
	}
	if l := cfg.Metrics.Listen; l != "" {
		ap, err := netip.ParseAddrPort(l)
		if err != nil {
			return nil, nil, fmt.Errorf("metrics.listen %q: %w", l, err)
		}
		metrics = ap.Port()
		ports = append(ports, metrics)
	}
	for _, p := range cfg.PeerList() {
		peers = append(peers, p.Addr)
		if metrics != 0 && metrics != p.Addr.Port() {
			peers = append(peers, netip.AddrPortFrom(p.Addr.Addr(), metrics))
		}
	}
	return ports, peers, nil
}

// guardPods installs the pods' guard before any TCP port of the agent
// listens, so that pods never get a moment to reach one. It reports
// whether there is a guard to remove when the agent stops (none without a
// TCP port).
func (a *Agent) guardPods() (bool, error) {
	ports, peers, err := guardTargets(a.cfg)
	if err != nil {
		return false, err
	}
	if len(ports) == 0 {
		return false, nil
	}
	if err := node.GuardAgentPort(context.Background(), ports, peers); err != nil {
		return false, err
	}
	return true, nil
}
