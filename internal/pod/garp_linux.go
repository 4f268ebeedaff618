package pod

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Announce sends a gratuitous ARP from the pod's eth0, once its traffic
// flows again after a restore or migration: every bridge on the LAN learns
// at once which port the pod's MAC is now behind, and every neighbour
// refreshes its ARP entry, instead of waiting for the pod's own traffic.
func Announce(nsPath string, ip netip.Addr) error {
	return withNetns(nsPath, func() error {
		ifc, err := net.InterfaceByName(podIfName)
		if err != nil {
			return fmt.Errorf("find %s: %w", podIfName, err)
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			return fmt.Errorf("open packet socket: %w", err)
		}
		defer unix.Close(fd)
		bcast := [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifc.Index, Halen: 6, Addr: bcast}
		// An ARP request for the pod's own address (the form most
		// stacks honour), then the same as a reply.
		for _, op := range []uint16{1, 2} {
			if err := unix.Sendto(fd, garpFrame(ifc.HardwareAddr, ip, op), 0, to); err != nil {
				return fmt.Errorf("send gratuitous ARP: %w", err)
			}
		}
		return nil
	})
}

// garpFrame builds an Ethernet frame holding a gratuitous ARP of op (1
// request, 2 reply) for ip at mac.
func garpFrame(mac net.HardwareAddr, ip netip.Addr, op uint16) []byte {
	b := make([]byte, 42)
	copy(b[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(b[6:12], mac)
	binary.BigEndian.PutUint16(b[12:14], unix.ETH_P_ARP)
	binary.BigEndian.PutUint16(b[14:16], 1)      // Ethernet
	binary.BigEndian.PutUint16(b[16:18], 0x0800) // IPv4
	b[18], b[19] = 6, 4
	binary.BigEndian.PutUint16(b[20:22], op)
	a := ip.As4()
	copy(b[22:28], mac)
	copy(b[28:32], a[:])
	if op == 2 {
		copy(b[32:38], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	}
	copy(b[38:42], a[:])
	return b
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
