package policy

import (
	"slices"
	"time"
)

// Checkpoint is what retention needs to know of a complete checkpoint.
type Checkpoint struct {
	ID      string
	Created time.Time
	Bytes   int64
}

// Prune returns the IDs to delete, oldest first, from list (all complete):
// everything but the newest keep, and then, while the kept ones total more
// than maxBytes (when maxBytes > 0), the oldest kept ones. It never returns
// the newest checkpoint, which is the job's only way back after a failure,
// nor an ID in protect (e.g. the one a restore is reading); protected
// checkpoints still count towards maxBytes, since they occupy the storage.
// A keep below 1 is treated as 1. It returns nil when nothing is to go.
//
// list should be oldest first, but it is sorted (stably) by Created anyway:
// trusting a mis-ordered list would delete the newest checkpoint.
func Prune(list []Checkpoint, keep int, maxBytes int64, protect map[string]bool) []string {
	if len(list) == 0 {
		return nil
	}
	sorted := slices.Clone(list)
	slices.SortStableFunc(sorted, func(a, b Checkpoint) int { return a.Created.Compare(b.Created) })
	newest := len(sorted) - 1
	keep = max(keep, 1)

	deletable := func(i int) bool { return i != newest && !protect[sorted[i].ID] }
	del := make([]bool, len(sorted))
	var kept int64
	for i, c := range sorted {
		if i < len(sorted)-keep && deletable(i) {
			del[i] = true
			continue
		}
		kept += c.Bytes
	}
	for i := range sorted {
		if maxBytes <= 0 || kept <= maxBytes {
			break
		}
		if !del[i] && deletable(i) {
			del[i] = true
			kept -= sorted[i].Bytes
		}
	}

	var ids []string
	for i, c := range sorted {
		if del[i] {
			ids = append(ids, c.ID)
		}
	}
	return ids
}
