package pod

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// The Cruz packet filter: while a pod's traffic is blocked, an nftables table
// inside the pod's netns drops every IP packet in and out. Peers' TCP stacks
// see a silent link and retransmit later; the pod's own unacknowledged data
// stays in its send queue, which CRIU saves. So nothing is lost and no
// message has to be drained. ARP is dropped too: a pod being restored or
// migrated must not answer for its address before it is released (its old
// and new places would both claim it); the release then announces it.
//
// The table lives in the pod's own netns, so deleting the netns also deletes
// the rule, and a filter can never outlive its pod.
const filterTable = "cruz_block"

const blockScript = `table inet ` + filterTable + ` {
	chain input { type filter hook input priority -400; policy drop; }
	chain output { type filter hook output priority -400; policy drop; }
}
table arp ` + filterTable + ` {
	chain input { type filter hook input priority -400; policy drop; }
	chain output { type filter hook output priority -400; policy drop; }
}
`

// nftPath is the nft binary, found once by CheckFilter.
var nftPath = "nft"

// CheckFilter finds nft, which the packet filter needs, and says how to get
// it when it is missing.
func CheckFilter() error {
	for _, p := range []string{"nft", "/usr/sbin/nft", "/sbin/nft"} {
		if path, err := exec.LookPath(p); err == nil {
			nftPath = path
			return nil
		}
	}
	return fmt.Errorf("nft (nftables) not found: cruzd holds pod traffic with nftables; install it (apt-get install nftables, or make deps)")
}

// Block installs the drop table in the pod's netns (idempotent).
func Block(ctx context.Context, nsPath string) error {
	if _, err := runInNetns(ctx, nsPath, blockScript, nftPath, "-f", "-"); err != nil {
		return fmt.Errorf("block pod traffic: %w", err)
	}
	return nil
}

// Unblock removes the drop table; a table that is not there is fine.
func Unblock(ctx context.Context, nsPath string) error {
	blocked, err := Blocked(ctx, nsPath)
	if err != nil || !blocked {
		return err
	}
	// One transaction, idempotent ("add" of an existing table is a no-op):
	// both tables go, or neither.
	script := "add table inet " + filterTable + "\ndelete table inet " + filterTable +
		"\nadd table arp " + filterTable + "\ndelete table arp " + filterTable + "\n"
	if _, err := runInNetns(ctx, nsPath, script, nftPath, "-f", "-"); err != nil {
		return fmt.Errorf("unblock pod traffic: %w", err)
	}
	return nil
}

// Blocked tells whether the drop table exists in the pod's netns.
func Blocked(ctx context.Context, nsPath string) (bool, error) {
	out, err := runInNetns(ctx, nsPath, "", nftPath, "list", "tables")
	if err != nil {
		return false, fmt.Errorf("list pod filter tables: %w", err)
	}
	return strings.Contains(out, "inet "+filterTable), nil
}

// runInNetns runs a short command (nft, ip) inside a netns and returns its
// stdout; the error quotes its stderr.
func runInNetns(ctx context.Context, nsPath, stdin string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if err := withNetns(nsPath, func() error { return startCmd(cmd) }); err != nil {
		return "", fmt.Errorf("start %s: %w", name, err)
	}
	if err := cmd.Wait(); err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
