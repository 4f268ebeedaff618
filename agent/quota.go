package agent

import (
	"fmt"
	"net/http"
	"os/user"
	"sort"
	"strconv"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/store"
)

// Store capacity: a checkpoint is refused before it holds the job when it
// would pass its owner's quota (store.quota, store.user_quotas) or not fit
// in what the store has free, judged by the job's last checkpoint; and it
// is abandoned after the dump, before the commit, when what it wrote
// passed the quota. Either way the job runs on and its previous checkpoint
// stays the latest. Only the job's own owner is charged, and nothing is
// deleted to make room: a full quota costs its user new checkpoints, never
// another user's old ones.

// roomFor refuses a checkpoint of j that would not fit (see above).
func (a *Agent) roomFor(j *job) error {
	j.mu.Lock()
	uid, name, id, last := j.rec.UID, j.rec.User, j.rec.ID, j.overQuota
	j.mu.Unlock()
	if list, _, err := a.store.List(id); err == nil && len(list) > 0 {
		last = max(last, list[len(list)-1].Bytes)
	}
	quota, key := a.cfg.QuotaOf(uid)
	if quota > 0 {
		used, err := a.store.UserUsage(uid)
		if err != nil {
			return fmt.Errorf("measure %s's use of the checkpoint store: %w", name, err)
		}
		if used+last > quota || used >= quota {
			return quotaError(id, name, uid, quota, key, used, fmt.Sprintf("its last checkpoint (or attempt) took %s", humanSize(last)))
		}
	}
	if last > 0 {
		free, err := a.store.Free()
		if err != nil {
			return err
		}
		if last > free {
			return api.Errorf(api.ErrTooLarge, "checkpoint of job %s refused: the checkpoint store %s has %s free and the job's last checkpoint took %s; the job runs on and its last checkpoint stays the latest: delete checkpoints that are no longer needed (cruz rm --checkpoints JOB) or ask the administrator for room",
				id, a.store.Root(), humanSize(free), humanSize(last))
		}
	}
	return nil
}

// roomAfterDump abandons a checkpoint whose images took its owner past
// the quota (they were counted in the store with the rest of the user's).
func (a *Agent) roomAfterDump(j *job, pend *store.Pending) error {
	j.mu.Lock()
	uid, name, id := j.rec.UID, j.rec.User, j.rec.ID
	j.mu.Unlock()
	quota, key := a.cfg.QuotaOf(uid)
	var used int64
	if quota > 0 {
		var err error
		if used, err = a.store.UserUsage(uid); err != nil {
			return fmt.Errorf("measure %s's use of the checkpoint store: %w", name, err)
		}
	}
	if quota <= 0 || used <= quota {
		j.mu.Lock()
		j.overQuota = 0
		j.mu.Unlock()
		return nil
	}
	written, err := pend.Bytes()
	if err != nil {
		return err
	}
	j.mu.Lock()
	j.overQuota = written
	j.mu.Unlock()
	return quotaError(id, name, uid, quota, key, used-written, fmt.Sprintf("this checkpoint wrote %s", humanSize(written)))
}

func quotaError(job, name string, uid uint32, quota int64, key string, used int64, need string) error {
	return api.Errorf(api.ErrTooLarge, "checkpoint of job %s refused: user %s (uid %d) has a checkpoint store quota of %s (%s) and uses %s, and %s; the job runs on and its last checkpoint stays the latest: delete checkpoints that are no longer needed (cruz rm --checkpoints JOB, or keep fewer with cruz run --keep) or ask the administrator for a larger quota (see cruz df)",
		job, name, uid, humanSize(quota), key, humanSize(used), need)
}

// handleStore answers cruz df: the store's use by user and job; a user
// sees their own, root everyone's.
func (a *Agent) handleStore(w http.ResponseWriter, _ *http.Request, c caller) error {
	jobs, err := a.store.JobsUsage()
	if err != nil {
		return err
	}
	free, err := a.store.Free()
	if err != nil {
		return err
	}
	out := api.StoreUsage{Dir: a.store.Root(), Free: free, Users: []api.UserUsage{}}
	byUID := map[uint32]*api.UserUsage{}
	for _, ju := range jobs {
		out.Used += ju.Bytes
		if c.UID != 0 && ju.UID != c.UID {
			continue
		}
		u := byUID[ju.UID]
		if u == nil {
			quota, _ := a.cfg.QuotaOf(ju.UID)
			u = &api.UserUsage{UID: ju.UID, User: userName(ju.UID), Quota: quota, Jobs: []api.JobUsage{}}
			byUID[ju.UID] = u
		}
		u.Bytes += ju.Bytes
		u.Jobs = append(u.Jobs, api.JobUsage{Job: ju.Job, Bytes: ju.Bytes, Checkpoints: ju.Checkpoints})
	}
	if _, ok := byUID[c.UID]; !ok && c.UID != 0 {
		// A user with nothing in the store still sees their quota.
		quota, _ := a.cfg.QuotaOf(c.UID)
		byUID[c.UID] = &api.UserUsage{UID: c.UID, User: c.User, Quota: quota, Jobs: []api.JobUsage{}}
	}
	for _, u := range byUID {
		out.Users = append(out.Users, *u)
	}
	sort.Slice(out.Users, func(i, k int) bool { return out.Users[i].UID < out.Users[k].UID })
	if c.UID != 0 {
		// Another user's use is theirs to know; the total would tell it.
		out.Used = 0
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func userName(uid uint32) string {
	if u, err := user.LookupId(strconv.Itoa(int(uid))); err == nil {
		return u.Username
	}
	return strconv.Itoa(int(uid))
}
