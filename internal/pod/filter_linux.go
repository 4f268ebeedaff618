package pod

import (
	"context"
	"fmt"
	"os"
	"os/exec"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
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
//
// The tables are changed over netlink, one transaction per pod, from the
// agent itself: an nft process per pod and per change made the resume phase
// of a checkpoint cost 0.3-1.4 s on a loaded 2-core node, all of it time in
// which the job was held.
const filterTable = "cruz_block"

// filterFamilies are the table families the filter holds: inet (IPv4 and
// IPv6) and arp, each with an input and an output chain that drop.
var filterFamilies = []struct {
	family      nftables.TableFamily
	input, outp nftables.ChainHook
}{
	{nftables.TableFamilyINet, nftables.ChainHook(unix.NF_INET_LOCAL_IN), nftables.ChainHook(unix.NF_INET_LOCAL_OUT)},
	{nftables.TableFamilyARP, nfARPIn, nfARPOut},
}

// The arp family's hooks (linux/netfilter_arp.h), which x/sys/unix lacks.
const (
	nfARPIn  nftables.ChainHook = 0
	nfARPOut nftables.ChainHook = 1
)

// nftPath is the nft binary, found once by CheckFilter: the guard of the
// agents' port (agentguard_linux.go) is installed with it, once at start.
var nftPath = "nft"

// CheckFilter makes sure this kernel lets the agent hold traffic with
// nftables, in a throwaway netns, and finds nft; it says what is missing.
func CheckFilter() error {
	found := false
	for _, p := range []string{"nft", "/usr/sbin/nft", "/sbin/nft"} {
		if path, err := exec.LookPath(p); err == nil {
			nftPath, found = path, true
			break
		}
	}
	if !found {
		return fmt.Errorf("nft (nftables) not found: cruzd guards its TCP port from pods with nftables; install it (apt-get install nftables, or make deps)")
	}
	return runOSThread(func() (bool, error) {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			// The thread may or may not have moved: let it die.
			return true, fmt.Errorf("check the packet filter: make a netns: %w", err)
		}
		ns, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			return true, fmt.Errorf("check the packet filter: %w", err)
		}
		defer ns.Close()
		err = blockFd(int(ns.Fd()), false)
		if err == nil {
			err = unblockFd(int(ns.Fd()))
		}
		if err != nil {
			return true, fmt.Errorf("cruzd holds pod traffic with nftables, which this kernel refused (%w): load the nf_tables module (modprobe nf_tables), or build the kernel with CONFIG_NF_TABLES, CONFIG_NF_TABLES_INET and CONFIG_NF_TABLES_ARP", err)
		}
		return true, nil // the thread sits in the throwaway netns: let it die
	})
}

// Block installs the drop tables in the pod's netns (idempotent).
func Block(_ context.Context, nsPath string) error {
	if err := withNetnsFd(nsPath, func(fd int) error { return blockFd(fd, false) }); err != nil {
		return fmt.Errorf("block pod traffic: %w", err)
	}
	return nil
}

// BlockOutput installs the drop tables with their output chains only: what
// the pod sends is held, what reaches it still arrives. Block completes it.
func BlockOutput(_ context.Context, nsPath string) error {
	if err := withNetnsFd(nsPath, func(fd int) error { return blockFd(fd, true) }); err != nil {
		return fmt.Errorf("block pod output: %w", err)
	}
	return nil
}

// Unblock removes the drop tables; tables that are not there are fine.
func Unblock(_ context.Context, nsPath string) error {
	if err := withNetnsFd(nsPath, unblockFd); err != nil {
		return fmt.Errorf("unblock pod traffic: %w", err)
	}
	return nil
}

// UnblockInput removes the input chains of the drop tables: what reaches the
// pod arrives again, what it sends is still held. Unblock completes it.
func UnblockInput(_ context.Context, nsPath string) error {
	if err := withNetnsFd(nsPath, unblockInputFd); err != nil {
		return fmt.Errorf("unblock pod input: %w", err)
	}
	return nil
}

// Blocked tells whether the drop table exists in the pod's netns.
func Blocked(_ context.Context, nsPath string) (blocked bool, err error) {
	err = withNetnsFd(nsPath, func(fd int) error {
		c, err := nftables.New(nftables.WithNetNSFd(fd))
		if err != nil {
			return err
		}
		tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
		if err != nil {
			return err
		}
		for _, t := range tables {
			blocked = blocked || t.Name == filterTable
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("list pod filter tables: %w", err)
	}
	return blocked, nil
}

func withNetnsFd(nsPath string, fn func(fd int) error) error {
	f, err := os.Open(nsPath)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	defer f.Close()
	return fn(int(f.Fd()))
}

// blockFd adds both tables and their chains (with outputOnly, the output
// chains) in one transaction: either the pod is held or nothing changed.
// Adding what exists is a no-op.
func blockFd(nsFd int, outputOnly bool) error {
	c, err := nftables.New(nftables.WithNetNSFd(nsFd))
	if err != nil {
		return err
	}
	drop := nftables.ChainPolicyDrop
	// Before everything else in the netns (conntrack's defrag is -400 too).
	prio := nftables.ChainPriority(-400)
	for _, f := range filterFamilies {
		t := c.AddTable(&nftables.Table{Name: filterTable, Family: f.family})
		for name, hook := range map[string]nftables.ChainHook{"input": f.input, "output": f.outp} {
			if outputOnly && name == "input" {
				continue
			}
			c.AddChain(&nftables.Chain{Name: name, Table: t, Type: nftables.ChainTypeFilter,
				Hooknum: &hook, Priority: &prio, Policy: &drop})
		}
	}
	return c.Flush()
}

// unblockInputFd deletes the input chains in one transaction; each table
// and chain is added first, so that a pod already released (or never held)
// is no error. Adding and deleting in one transaction changes nothing else.
func unblockInputFd(nsFd int) error {
	c, err := nftables.New(nftables.WithNetNSFd(nsFd))
	if err != nil {
		return err
	}
	drop := nftables.ChainPolicyDrop
	prio := nftables.ChainPriority(-400)
	for _, f := range filterFamilies {
		t := c.AddTable(&nftables.Table{Name: filterTable, Family: f.family})
		hook := f.input
		ch := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: &hook, Priority: &prio, Policy: &drop})
		c.DelChain(ch)
	}
	return c.Flush()
}

// unblockFd deletes both tables in one transaction. Each is added first, so
// that deleting a table that is not there is no error (what `nft -f` with
// "add table; delete table" does).
func unblockFd(nsFd int) error {
	c, err := nftables.New(nftables.WithNetNSFd(nsFd))
	if err != nil {
		return err
	}
	for _, f := range filterFamilies {
		t := &nftables.Table{Name: filterTable, Family: f.family}
		c.AddTable(t)
		c.DelTable(t)
	}
	return c.Flush()
}
