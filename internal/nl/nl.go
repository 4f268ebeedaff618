// Package nl lists links, addresses, routes and neighbours over netlink,
// retrying a dump that the kernel interrupted. A netlink dump spans several
// messages; when the table changes meanwhile (any interface added or removed
// on the machine, by anyone), the kernel flags the dump and
// vishvananda/netlink returns what it got with ErrDumpInterrupted: the list
// may miss entries or hold stale ones. On a machine whose virtual nodes and
// pods come and go all the time that is common (`cruz cluster down` failed on
// it), so every dump in Cruz goes through here. Lookups of one object
// (LinkByName and the like) are not dumps and need none of this.
package nl

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
)

// DumpAttempts is how many times a dump is tried before its interruption is
// returned as an error. An interruption needs a change during the few
// microseconds of a dump, so five in a row mean the table churns without
// pause, and the caller should hear about it rather than wait.
const DumpAttempts = 5

// Retry runs a dump until the kernel does not interrupt it, at most
// DumpAttempts times. Any other error is returned at once. After the last
// interrupted attempt it returns no entries (never a list that may be
// wrong) and an error that wraps netlink.ErrDumpInterrupted.
func Retry[T any](what string, dump func() ([]T, error)) ([]T, error) {
	for range DumpAttempts {
		got, err := dump()
		if err == nil {
			return got, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("the kernel interrupted the dump of %s %d times in a row, as the table kept changing: %w", what, DumpAttempts, netlink.ErrDumpInterrupted)
}

// LinkList is netlink.LinkList, retried.
func LinkList() ([]netlink.Link, error) {
	return Retry("interfaces", netlink.LinkList)
}

// AddrList is netlink.AddrList, retried.
func AddrList(link netlink.Link, family int) ([]netlink.Addr, error) {
	return Retry("addresses", func() ([]netlink.Addr, error) { return netlink.AddrList(link, family) })
}

// RouteList is netlink.RouteList, retried.
func RouteList(link netlink.Link, family int) ([]netlink.Route, error) {
	return Retry("routes", func() ([]netlink.Route, error) { return netlink.RouteList(link, family) })
}

// NeighList is netlink.NeighList, retried.
func NeighList(linkIndex, family int) ([]netlink.Neigh, error) {
	return Retry("neighbours", func() ([]netlink.Neigh, error) { return netlink.NeighList(linkIndex, family) })
}
