package agent

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
)

// Pod addresses: a job's pods keep their addresses (and MACs, derived from
// them) wherever they move, so the coordinator hands them out from its pool
// and keeps them while any run of the job may come back into them.

// cancelledAddrHold is how long a cancelled Slurm step's pod addresses stay
// reserved for a requeue to resume it with.
const cancelledAddrHold = 24 * time.Hour

// usedAddrs lists the pod addresses held by jobs (but except) that have pods
// or may be restarted into them (stopped or lost jobs keep their addresses,
// which move with their ranks).
//
// The addresses in a job's latest checkpoint are held too, whether or not
// this agent knows the job: the store is the cluster's, and a job removed
// with `cruz rm` (its checkpoints kept), or coordinated by another node, can
// be restarted on any node, with those addresses.
func (a *Agent) usedAddrs(except string) map[netip.Addr]string {
	used := a.checkpointAddrs(except)
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, j := range a.jobs {
		if id == except {
			continue
		}
		j.mu.Lock()
		// A Slurm step that was cancelled is resumed by a requeue, which
		// comes soon or never (scancel): its addresses are kept for it a day.
		expired := j.rec.State == api.StateCancelled && time.Since(j.rec.Updated) > cancelledAddrHold
		if j.rec.State.HoldsAddrs() && !expired {
			for _, p := range j.rec.Pods {
				used[p.Addr.Addr()] = id
			}
		}
		j.mu.Unlock()
	}
	return used
}

// allocAddrs picks n free addresses of the node's pool (network.pool, by
// default the whole pod subnet), with the subnet's prefix length. The
// subnet's network, first host (left for a gateway) and broadcast
// addresses, and the pool's own network and broadcast addresses, are never
// used. Caller holds allocMu.
func (a *Agent) allocAddrs(n int) ([]netip.Prefix, error) {
	out := pickAddrs(a.subnet, a.pool, a.usedAddrs(""), n)
	if len(out) < n {
		if a.pool != a.subnet {
			return nil, fmt.Errorf("this node's address pool %s (of subnet %s) has fewer than %d free addresses: remove old jobs (cruz rm) or widen network.pool", a.pool, a.subnet, n)
		}
		return nil, fmt.Errorf("the pod subnet %s has fewer than %d free addresses: remove old jobs (cruz rm) or widen network.subnet", a.subnet, n)
	}
	return out, nil
}

// pickAddrs returns up to n addresses of pool that are not in used, as
// allocAddrs describes.
func pickAddrs(subnet, pool netip.Prefix, used map[netip.Addr]string, n int) []netip.Prefix {
	if !pool.IsValid() {
		pool = subnet
	}
	subNet := subnet.Masked().Addr()
	gateway := subNet.Next()
	var out []netip.Prefix
	for ip := pool.Masked().Addr().Next(); pool.Contains(ip) && len(out) < n; ip = ip.Next() {
		if !pool.Contains(ip.Next()) || !subnet.Contains(ip.Next()) { // a broadcast address
			break
		}
		if ip == gateway || !subnet.Contains(ip) {
			continue
		}
		if _, taken := used[ip]; !taken {
			out = append(out, netip.PrefixFrom(ip, subnet.Bits()))
		}
	}
	return out
}

// allocMu serialises address allocation with the registration of the job
// that takes the addresses.
var allocMu sync.Mutex

// checkpointAddrs maps the pod addresses of every job's latest checkpoint
// in the store (but except's) to the job. A store that cannot be read
// reserves nothing: the restore of such a job fails anyway.
func (a *Agent) checkpointAddrs(except string) map[netip.Addr]string {
	used := map[netip.Addr]string{}
	jobs, err := a.store.Jobs()
	if err != nil {
		a.log.Warn("reading the store for the pod addresses its checkpoints hold", "err", err)
		return used
	}
	for _, id := range jobs {
		if id == except {
			continue
		}
		ms, _, err := a.store.List(id)
		if err != nil || len(ms) == 0 {
			continue
		}
		var rec jobRecord
		if json.Unmarshal(ms[len(ms)-1].Spec, &rec) != nil {
			continue
		}
		for _, p := range rec.Pods {
			used[p.Addr.Addr()] = id
		}
	}
	return used
}
