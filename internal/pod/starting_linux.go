package pod

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/creds"
)

// startWait bounds how long a dump waits for a pod that is still starting.
const startWait = 10 * time.Second

// starting says whether the pod's PID 1 is still the pod init (the agent's
// own executable, as root) that has not yet become the user's command. A
// job is running as soon as its pods exist, so a checkpoint can come in
// that moment; dumping then would be refused for the init's root
// credentials, with a message about privileges the job never had.
func (h *Host) starting(p *Pod) bool {
	if h.Self == "" {
		return false
	}
	self, err := os.Stat(h.Self)
	if err != nil {
		return false
	}
	exe, err := os.Stat(fmt.Sprintf("/proc/%d/exe", p.PID))
	if err != nil || !os.SameFile(self, exe) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID))
	if err != nil {
		return false
	}
	s, _, err := creds.ParseStatus(string(b))
	return err == nil && s.UID[0] == 0
}

// awaitStarted waits, up to startWait, until the pod's command runs.
func (h *Host) awaitStarted(ctx context.Context, p *Pod) error {
	deadline := time.Now().Add(startWait)
	for h.starting(p) {
		if time.Now().After(deadline) {
			return api.Errorf(api.ErrConflict, "pod %s is still starting (its command has not begun after %s): checkpoint it again in a moment", p.Spec.Name, startWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.Exited():
			return nil
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
