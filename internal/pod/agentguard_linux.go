package pod

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
)

// Pods must not reach the agents' TCP API. A request needs the cluster key,
// which pods do not have, but a pod could still hold connections open
// against an agent, or try its luck against the parser, from inside the
// cluster. On the virtual cluster (and wherever network.address is set)
// the node's own address is on the pod bridge, so nothing routing-wise
// keeps pods away from it.
//
// The same holds for the metrics port (metrics.listen): /metrics needs no
// key, and what it tells (jobs, users, sizes) is not a pod's to read.
//
// The guard is one nftables table of the bridge family in the agent's
// netns: a frame that comes in on a pod's veth (every one is named
// HostVethPrefix + ...) is dropped if it is TCP to one of the agent's own
// ports (hook input: frames for the node itself) or to a peer's address and
// port (hook forward: frames the bridge passes on to the LAN). Pods still
// talk to each other on any port, the agents to each other as before.
// The agent installs it before its TCP API listens and removes it when it
// stops (with its jobs' pods); after a crash it stays until the next start
// replaces it.
const guardTable = "cruz_agent_guard"

// guardScript is the nft script that installs the guard, replacing any
// earlier one in one transaction.
func guardScript(ports []uint16, peers []netip.AddrPort) string {
	var b strings.Builder
	fmt.Fprintf(&b, "add table bridge %s\ndelete table bridge %s\n", guardTable, guardTable)
	fmt.Fprintf(&b, "table bridge %s {\n", guardTable)
	fmt.Fprintf(&b, "\tchain input {\n\t\ttype filter hook input priority -300; policy accept;\n")
	for _, port := range ports {
		fmt.Fprintf(&b, "\t\tiifname \"%s*\" tcp dport %d drop\n", HostVethPrefix, port)
	}
	b.WriteString("\t}\n")
	fmt.Fprintf(&b, "\tchain forward {\n\t\ttype filter hook forward priority -300; policy accept;\n")
	for _, p := range peers {
		family := "ip"
		if p.Addr().Unmap().Is6() {
			family = "ip6"
		}
		fmt.Fprintf(&b, "\t\tiifname \"%s*\" %s daddr %s tcp dport %d drop\n", HostVethPrefix, family, p.Addr().Unmap(), p.Port())
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// GuardAgentPort installs, in the calling process's netns (the agent's),
// the rules that keep the node's pods from the agent's own TCP ports
// (whatever address they listen on) and from peers (address and port).
// It replaces any earlier guard, so an agent restarted with another
// configuration gets its own.
func GuardAgentPort(ctx context.Context, ports []uint16, peers []netip.AddrPort) error {
	if err := nft(ctx, guardScript(ports, peers)); err != nil {
		return fmt.Errorf("keep pods from the agents' TCP port (nftables table bridge %s): %w", guardTable, err)
	}
	return nil
}

// UnguardAgentPort removes the guard (none is fine): the agent stopped, and
// with it every pod of its jobs.
func UnguardAgentPort(ctx context.Context) error {
	if err := nft(ctx, fmt.Sprintf("add table bridge %s\ndelete table bridge %s\n", guardTable, guardTable)); err != nil {
		return fmt.Errorf("remove nftables table bridge %s: %w", guardTable, err)
	}
	return nil
}

func nft(ctx context.Context, script string) error {
	cmd := exec.CommandContext(ctx, nftPath, "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
