package agent

import (
	"errors"
	"path/filepath"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/store"
)

// The store keeps every owner's job directory apart (store.ErrOwner): its
// refusals reach callers as forbidden requests, translated here because
// the store knows nothing of the API.

// storeOwner is the owner of j's directory in the store: the job's user.
func (j *job) storeOwner() store.Owner {
	j.mu.Lock()
	defer j.mu.Unlock()
	return store.Owner{UID: j.rec.UID, GID: j.rec.GID}
}

// ownerErr makes the store's refusal of another owner's job directory a
// forbidden request; other errors pass unchanged.
func ownerErr(err error) error {
	if errors.Is(err, store.ErrOwner) && api.KindOf(err) == nil {
		return api.Errorf(api.ErrForbidden, "%w", err)
	}
	return err
}

// checkStoreOwner refuses caller c a job id whose directory in the store
// (left by an earlier job of the same id: a Slurm job id that slurmctld
// handed out again, say) belongs to another user, before anything of the
// job is written there.
func (a *Agent) checkStoreOwner(c caller, id string) error {
	err := a.store.CheckOwner(id, store.Owner{UID: c.UID, GID: c.GID})
	if errors.Is(err, store.ErrOwner) {
		return api.Errorf(api.ErrForbidden, "%w: ask an administrator to remove them (as root: cruz rm --checkpoints %s, or rm -r %s if no agent knows the job)",
			err, id, filepath.Join(a.store.Root(), id))
	}
	return err
}
