package pod

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/nl"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// podIfName is the name of a pod's interface inside its netns.
const podIfName = "eth0"

// HostVethPrefix starts the name of every host-side veth the agent makes, so
// that reconcile can find veths whose pod is gone.
const HostVethPrefix = "cz"

// HostVethName derives a stable, short (<= 15 bytes) host-side veth name.
func HostVethName(pod string) string {
	h := fnv.New32a()
	h.Write([]byte(pod))
	return fmt.Sprintf("%s%08x", HostVethPrefix, h.Sum32())
}

// MAC is the pod's MAC for its IPv4 address (api.PodMAC: both sides of the
// protocol derive it the same way).
func MAC(ip netip.Addr) net.HardwareAddr { return api.PodMAC(ip) }

// nodeMAC is the MAC of a node's pod bridge with address ip: locally
// administered, and distinct from every pod MAC (MAC starts 02:c2).
func nodeMAC(ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
	return net.HardwareAddr{0x02, 0xc3, b[0], b[1], b[2], b[3]}
}

// EnsureBridge creates the node's pod bridge if it does not exist and brings
// it up. The bridge has no address: pods talk to each other across it, and
// nothing routes them anywhere else.
func EnsureBridge(name string, mtu int) (netlink.Link, error) {
	if l, err := netlink.LinkByName(name); err == nil {
		if _, ok := l.(*netlink.Bridge); !ok {
			return nil, fmt.Errorf("pod bridge %s exists but is a %s, not a bridge: pick another network.bridge in the config", name, l.Type())
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return nil, fmt.Errorf("bring up bridge %s: %w", name, err)
		}
		return l, nil
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}}
	if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create bridge %s: %w", name, err)
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find bridge %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("bring up bridge %s: %w", name, err)
	}
	return l, nil
}

// UplinkWait is how long the agent waits at start for network.uplink to
// appear: `cruz cluster up` moves it into the node's netns just after it
// starts the agent.
const UplinkWait = 10 * time.Second

// AttachUplink waits up to wait for the interface uplink to exist in the
// agent's netns, then enslaves it to the pod bridge and brings it up, so that
// the node's pods share that LAN. The node itself needs no address on it.
func AttachUplink(ctx context.Context, uplink, bridge string, wait time.Duration) error {
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("find pod bridge %s: %w", bridge, err)
	}
	deadline := time.Now().Add(wait)
	var l netlink.Link
	for {
		if l, err = netlink.LinkByName(uplink); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("uplink interface %s (network.uplink) did not appear in the node's network namespace within %s: "+
				"create it (or move it into this namespace) before starting cruzd, or fix network.uplink: %w", uplink, wait, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	if l.Attrs().MasterIndex != br.Attrs().Index {
		if err := netlink.LinkSetMaster(l, br); err != nil {
			return fmt.Errorf("add uplink %s (network.uplink) to pod bridge %s: %w", uplink, bridge, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring up uplink %s (network.uplink): %w", uplink, err)
	}
	return nil
}

// SetLinkUp brings up the interface name of the agent's netns.
func SetLinkUp(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find interface %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring up interface %s: %w", name, err)
	}
	return nil
}

// podLink describes a pod's attachment to the node's bridge.
type podLink struct {
	Pod    string
	NsPath string
	Bridge string
	Addr   netip.Prefix // pod address with the subnet's prefix length
	MTU    int
}

// attachPod creates the pod's veth pair with the pod end made directly in the
// pod netns (named eth0, with the pod's MAC), attaches the host end to the
// bridge, and configures lo and eth0 inside the pod. The caller decides when
// the pod's traffic may flow (see filter_linux.go): the links come up here.
func attachPod(l podLink) (err error) {
	br, err := netlink.LinkByName(l.Bridge)
	if err != nil {
		return fmt.Errorf("find pod bridge %s: %w", l.Bridge, err)
	}
	ns, err := netns.GetFromPath(l.NsPath)
	if err != nil {
		return fmt.Errorf("open pod netns %s: %w", l.NsPath, err)
	}
	defer ns.Close()
	hostName := HostVethName(l.Pod)
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: hostName, MTU: l.MTU, MasterIndex: br.Attrs().Index},
		PeerName:         podIfName,
		PeerHardwareAddr: MAC(l.Addr.Addr()),
		PeerNamespace:    netlink.NsFd(int(ns)),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s for pod %s: %w", hostName, l.Pod, err)
	}
	defer func() {
		if err != nil {
			_ = deleteHostVeth(l.Pod)
		}
	}()
	host, err := netlink.LinkByName(hostName)
	if err != nil {
		return fmt.Errorf("find veth %s: %w", hostName, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("bring up veth %s: %w", hostName, err)
	}
	// The handle's sockets are made in the pod's netns, on a thread of
	// withNetns: netlink.NewHandleAt would enter the netns itself and hand
	// its thread back to the Go runtime even when it failed to leave it.
	var h *netlink.Handle
	if err := withNetns(l.NsPath, func() (err error) { h, err = netlink.NewHandle(unix.NETLINK_ROUTE); return err }); err != nil {
		return fmt.Errorf("netlink in pod netns: %w", err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo in pod %s: %w", l.Pod, err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring up lo in pod %s: %w", l.Pod, err)
	}
	eth, err := h.LinkByName(podIfName)
	if err != nil {
		return fmt.Errorf("find %s in pod %s: %w", podIfName, l.Pod, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(l.Addr.Addr().AsSlice()), Mask: net.CIDRMask(l.Addr.Bits(), 32)}}
	if err := h.AddrAdd(eth, addr); err != nil {
		return fmt.Errorf("add address %s to pod %s: %w", l.Addr, l.Pod, err)
	}
	if err := h.LinkSetUp(eth); err != nil {
		return fmt.Errorf("bring up %s in pod %s: %w", podIfName, l.Pod, err)
	}
	return nil
}

// deleteHostVeth removes the pod's veth pair (deleting one end deletes both).
// A missing veth is not an error.
func deleteHostVeth(pod string) error {
	l, err := netlink.LinkByName(HostVethName(pod))
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("find veth of pod %s: %w", pod, err)
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete veth of pod %s: %w", pod, err)
	}
	return nil
}

// HostVeths lists the names of the agent's host-side veths attached to bridge.
func HostVeths(bridge string) []string {
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return nil
	}
	links, err := nl.LinkList()
	if err != nil {
		return nil
	}
	var names []string
	for _, l := range links {
		a := l.Attrs()
		if a.MasterIndex == br.Attrs().Index && len(a.Name) == len(HostVethPrefix)+8 && a.Name[:len(HostVethPrefix)] == HostVethPrefix {
			names = append(names, a.Name)
		}
	}
	return names
}

func DeleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil
	}
	return netlink.LinkDel(l)
}

// SetBridgeAddress puts the node's address on the pod LAN (network.address)
// on the pod bridge, if it is not there yet.
func SetBridgeAddress(bridge, cidr string) error {
	l, err := netlink.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("find pod bridge %s: %w", bridge, err)
	}
	addr, err := netlink.ParseAddr(cidr)
	if err != nil {
		return fmt.Errorf("network.address %q: %w", cidr, err)
	}
	// A bridge takes the lowest MAC of its ports unless given one: every
	// pod veth added or removed would change the MAC behind the node's
	// address, and the other nodes' ARP caches would send to the old one
	// for seconds. A fixed MAC, derived from the address, keeps it.
	ip, _ := netip.AddrFromSlice(addr.IP.To4())
	mac := nodeMAC(ip)
	if l.Attrs().HardwareAddr.String() != mac.String() {
		if err := netlink.LinkSetHardwareAddr(l, mac); err != nil {
			return fmt.Errorf("set the MAC of bridge %s: %w", bridge, err)
		}
	}
	if err := netlink.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("put network.address %s on bridge %s: %w", cidr, bridge, err)
	}
	return nil
}
