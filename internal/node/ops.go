package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/cgroups"
	"github.com/cruz-hpc/cruz/internal/pod"
	"github.com/cruz-hpc/cruz/internal/store"
)

// Do carries out one node operation for c, the identity the coordinator acts
// for (the job's owner, or root).
func (n *Node) Do(ctx context.Context, c api.Identity, op api.NodeOp, req api.NodeRequest) (api.NodeResponse, error) {
	if op == api.OpStart || op == api.OpRestore {
		return n.create(ctx, c, op, req)
	}
	if !op.Valid() {
		return api.NodeResponse{}, api.Errorf(api.ErrNotFound, "unknown node operation %q", op)
	}
	s, err := n.setOf(c, req.Job)
	if err != nil {
		if op == api.OpDestroy && errors.Is(err, api.ErrNotFound) {
			return api.NodeResponse{}, nil // already gone
		}
		return api.NodeResponse{}, err
	}
	pods, err := s.list(req.Pods, n.cfg.Name)
	if err != nil {
		if op != api.OpDestroy {
			return api.NodeResponse{}, err
		}
		pods, _ = s.list(nil, n.cfg.Name) // destroy what is there of them
		pods = only(pods, req.Pods)
	}
	h := n.cfg.Host
	switch op {
	case api.OpBlock:
		if req.OutputOnly {
			return api.NodeResponse{}, parallel(pods, func(p *pod.Pod) error { return h.BlockOutput(ctx, p) })
		}
		return api.NodeResponse{}, parallel(pods, func(p *pod.Pod) error { return h.Block(ctx, p) })
	case api.OpDump:
		s.op.Lock()
		defer s.op.Unlock()
		return n.dump(ctx, s, pods, req)
	case api.OpResume:
		if req.InputOnly {
			return api.NodeResponse{}, parallel(pods, func(p *pod.Pod) error { return h.UnblockInput(ctx, p) })
		}
		s.op.Lock()
		defer s.op.Unlock()
		if req.Continue {
			for _, p := range pods {
				p.ResumeStopped()
			}
			// A dump cut short (CRIU killed, a task some other tracer
			// held) can leave a task stopped only once the tracer lets
			// go: look again a few times, for stopped tasks only, and
			// never while a dump of the set runs.
			go func() {
				for _, d := range []time.Duration{500 * time.Millisecond, 2 * time.Second, 5 * time.Second} {
					time.Sleep(d)
					if !s.op.TryLock() {
						continue
					}
					for _, p := range pods {
						p.ContinueStopped()
					}
					s.op.Unlock()
				}
			}()
		}
		return api.NodeResponse{}, parallel(pods, func(p *pod.Pod) error { return h.Unblock(ctx, p) })
	case api.OpRelease:
		return api.NodeResponse{}, parallel(pods, func(p *pod.Pod) error { return h.Release(ctx, p) })
	case api.OpDestroy:
		var wg sync.WaitGroup
		for _, p := range pods {
			wg.Add(1)
			go func(p *pod.Pod) { defer wg.Done(); h.Destroy(p) }(p)
		}
		wg.Wait()
		var end int64
		if s.out != nil {
			end = s.out.Offset()
		}
		s.mu.Lock()
		for _, p := range pods {
			if s.pods[p.Spec.Name] == p {
				delete(s.pods, p.Spec.Name)
			}
		}
		empty := len(s.pods) == 0
		s.mu.Unlock()
		n.persist(s)
		if empty {
			for _, p := range pods {
				cgroups.RemoveStep(p.Spec.Cgroups)
			}
		}
		return api.NodeResponse{OutputEnd: end, Empty: empty}, nil
	case api.OpWait:
		if len(pods) != 1 {
			return api.NodeResponse{}, api.Errorf(api.ErrInvalid, "wait takes exactly one pod")
		}
		select {
		case <-pods[0].Exited():
			return api.NodeResponse{ExitCode: pods[0].ExitCode()}, nil
		case <-ctx.Done():
			return api.NodeResponse{}, ctx.Err()
		}
	case api.OpSignal:
		if req.Signal <= 0 || req.Signal > 64 {
			return api.NodeResponse{}, api.Errorf(api.ErrInvalid, "signal %d is not a valid signal number", req.Signal)
		}
		for _, p := range pods {
			sig := syscall.Signal(req.Signal)
			if TerminatesByDefault(sig) && !pod.HandlesSignal(p.PID, sig) {
				// A pod's PID 1 ignores signals it has no handler for.
				sig = syscall.SIGKILL
			}
			if err := p.Signal(sig); err != nil {
				return api.NodeResponse{}, err
			}
		}
		return api.NodeResponse{}, nil
	case api.OpPods:
		var out api.NodeResponse
		for _, p := range pods {
			st := api.PodStatus{Name: p.Spec.Name, Role: p.Spec.Role, PID: p.PID}
			select {
			case <-p.Exited():
				st.Exited, st.Code = true, p.ExitCode()
			default:
			}
			out.Pods = append(out.Pods, st)
		}
		return out, nil
	}
	return api.NodeResponse{}, api.Errorf(api.ErrNotFound, "unknown node operation %q", op)
}

// TerminatesByDefault tells whether sig ends a process that does not handle it.
func TerminatesByDefault(sig syscall.Signal) bool {
	switch sig {
	case syscall.SIGCHLD, syscall.SIGCONT, syscall.SIGSTOP, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGURG, syscall.SIGWINCH:
		return false
	}
	return true
}

// create starts a new pod, or restores pods from images, on this node.
func (n *Node) create(ctx context.Context, c api.Identity, op api.NodeOp, req api.NodeRequest) (api.NodeResponse, error) {
	var specs []pod.Spec
	if op == api.OpStart {
		if req.Spec == nil {
			return api.NodeResponse{}, api.Errorf(api.ErrInvalid, "start needs a pod spec")
		}
		specs = []pod.Spec{*req.Spec}
	} else {
		for _, r := range req.Restore {
			specs = append(specs, r.Spec)
		}
	}
	if len(specs) == 0 {
		return api.NodeResponse{}, api.Errorf(api.ErrInvalid, "no pod given")
	}
	for _, sp := range specs {
		if err := store.ValidatePodName(sp.Name); err != nil || !strings.HasPrefix(sp.Name, req.Job+"-") {
			return api.NodeResponse{}, api.Errorf(api.ErrInvalid, "pod name %q is not a pod of job %s", sp.Name, req.Job)
		}
		// A pod runs as the user the request acts for, never as another.
		if c.UID != 0 && (sp.UID != c.UID || sp.GID != c.GID) {
			return api.NodeResponse{}, api.Errorf(api.ErrForbidden, "pod %s would run as uid %d gid %d, but the request acts for uid %d", sp.Name, sp.UID, sp.GID, c.UID)
		}
		if !n.cfg.Subnet.Contains(sp.Addr.Addr()) || sp.Addr.Bits() != n.cfg.Subnet.Bits() {
			return api.NodeResponse{}, api.Errorf(api.ErrInvalid, "pod %s address %s is not in this node's pod subnet %s", sp.Name, sp.Addr, n.cfg.Subnet)
		}
	}
	for i := range specs {
		specs[i].Cgroups = n.stepCgroups(req.Job, specs[i].UID)
	}
	if req.Coordinator == "" {
		req.Coordinator = n.cfg.Name
	}
	owner := c
	if c.UID == 0 {
		owner = api.Identity{UID: specs[0].UID, GID: specs[0].GID, Groups: specs[0].Groups}
	}
	n.createMu.Lock()
	s, err := n.setFor(owner, req.Job, req.Coordinator)
	if err != nil {
		n.createMu.Unlock()
		return api.NodeResponse{}, err
	}
	if err := n.checkFreeHere(req.Job, specs); err != nil {
		n.createMu.Unlock()
		n.persist(s)
		return api.NodeResponse{}, err
	}
	s.mu.Lock()
	for _, sp := range specs {
		if _, dup := s.pods[sp.Name]; dup {
			s.mu.Unlock()
			n.createMu.Unlock()
			return api.NodeResponse{}, api.Errorf(api.ErrConflict, "pod %s already runs on node %s", sp.Name, n.cfg.Name)
		}
	}
	s.mu.Unlock()
	n.createMu.Unlock()

	var made []*pod.Pod
	var mu sync.Mutex
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	for i, sp := range specs {
		wg.Add(1)
		go func(i int, sp pod.Spec) {
			defer wg.Done()
			var p *pod.Pod
			var err error
			if op == api.OpStart {
				p, err = n.cfg.Host.Start(ctx, sp, s.sink)
			} else {
				p, err = n.restoreOne(ctx, s, req, sp, req.Restore[i].Pipes)
			}
			if err != nil {
				errs[i] = err
				return
			}
			mu.Lock()
			made = append(made, p)
			mu.Unlock()
		}(i, sp)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, p := range made {
			n.cfg.Host.Destroy(p)
		}
		n.persist(s)
		return api.NodeResponse{}, err
	}
	s.mu.Lock()
	for _, p := range made {
		s.pods[p.Spec.Name] = p
	}
	s.mu.Unlock()
	n.persist(s)
	return api.NodeResponse{}, nil
}

// checkFreeHere refuses pods whose address another job's pods use on this
// node. Caller holds createMu.
func (n *Node) checkFreeHere(job string, specs []pod.Spec) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, other := range n.sets {
		if id == job {
			continue
		}
		other.mu.Lock()
		for _, p := range other.pods {
			for _, sp := range specs {
				if p.Spec.Addr.Addr() == sp.Addr.Addr() {
					other.mu.Unlock()
					return api.Errorf(api.ErrConflict, "address %s of pod %s is in use on node %s by job %s", sp.Addr.Addr(), sp.Name, n.cfg.Name, id)
				}
			}
		}
		other.mu.Unlock()
	}
	return nil
}

// restoreOne restores one pod from the images of a checkpoint or transfer
// in the shared store, into a new netns whose traffic stays blocked.
func (n *Node) restoreOne(ctx context.Context, s *podSet, req api.NodeRequest, sp pod.Spec, pipes map[string]string) (*pod.Pod, error) {
	var images string
	if strings.HasPrefix(req.Images, "xfer-") {
		dir, err := n.cfg.Store.TransferDir(req.Job, req.Images)
		if err != nil {
			return nil, api.Errorf(api.ErrInvalid, "%w", err)
		}
		images = filepath.Join(dir, sp.Name)
	} else {
		if err := store.ValidateCheckpointID(req.Images); err != nil {
			return nil, api.Errorf(api.ErrInvalid, "%w", err)
		}
		images = filepath.Join(n.cfg.Store.Root(), req.Job, req.Images, sp.Name)
	}
	work := filepath.Join(s.dir, "criu", "restore-"+req.Images, sp.Name)
	if err := os.MkdirAll(work, 0o700); err != nil {
		return nil, err
	}
	p, err := n.cfg.Host.Restore(ctx, sp, images, work, pipes, s.sink, n.cfg.CRIUTimeout)
	if err != nil {
		return nil, fmt.Errorf("on node %s: %w", n.cfg.Name, err)
	}
	os.RemoveAll(work)
	return p, nil
}

// dump dumps the pods into the pending checkpoint (or transfer) whose pod
// directories the coordinator made in the shared store.
func (n *Node) dump(ctx context.Context, s *podSet, pods []*pod.Pod, req api.NodeRequest) (api.NodeResponse, error) {
	res := make([]api.PodDump, len(pods))
	idx := map[*pod.Pod]int{}
	for i, p := range pods {
		idx[p] = i
	}
	err := parallel(pods, func(p *pod.Pod) error {
		dir, err := n.cfg.Store.PendingPodDir(req.Job, req.Images, p.Spec.Name)
		if err != nil {
			return err
		}
		work := filepath.Join(s.dir, "criu", req.Images, p.Spec.Name)
		if err := os.MkdirAll(work, 0o700); err != nil {
			return err
		}
		var warnings []string
		opts := pod.DumpOptions{ImagesDir: dir, WorkDir: work, KeepRunning: !req.Stop, Timeout: n.cfg.CRIUTimeout,
			Warn: func(msg string) { warnings = append(warnings, msg) }}
		took, err := n.cfg.Host.Dump(ctx, p, opts)
		for try := 1; try <= 3 && err != nil && transientDumpError(err) && ctx.Err() == nil; try++ {
			// CRIU found a socket's receive queue changing under it: data
			// that was already past the filter when the pod was blocked
			// (in the socket's backlog) reached the queue while CRIU read
			// it. CRIU resumed the pod; the backlog is drained by now, so
			// dump again.
			n.log.Info("dump again after a transient TCP repair error", "pod", p.Spec.Name, "try", try, "err", firstLine(err.Error()))
			_ = os.RemoveAll(dir)
			if err := os.Mkdir(dir, 0o700); err != nil {
				return err
			}
			time.Sleep(time.Duration(try) * 200 * time.Millisecond)
			warnings = nil
			took, err = n.cfg.Host.Dump(ctx, p, opts)
		}
		if err != nil {
			return fmt.Errorf("pod %s on node %s: %w", p.Spec.Name, n.cfg.Name, err)
		}
		os.RemoveAll(work)
		for _, w := range warnings {
			n.log.Warn(w, "job", req.Job, "images", req.Images)
		}
		res[idx[p]] = api.PodDump{Pod: p.Spec.Name, DumpMS: took.Milliseconds(), Pipes: p.Pipes(), Warnings: warnings}
		return nil
	})
	if err != nil {
		return api.NodeResponse{}, err
	}
	return api.NodeResponse{Dumps: res}, nil
}

// parallel runs fn for every pod at once and joins their errors.
func parallel(pods []*pod.Pod, fn func(*pod.Pod) error) error {
	errs := make([]error, len(pods))
	var wg sync.WaitGroup
	for i, p := range pods {
		wg.Add(1)
		go func(i int, p *pod.Pod) {
			defer wg.Done()
			errs[i] = fn(p)
		}(i, p)
	}
	wg.Wait()
	return errors.Join(errs...)
}

// transientDumpError: CRIU's TCP repair read a receive queue while it was
// still changing; the same dump a moment later succeeds.
func transientDumpError(err error) bool {
	return strings.Contains(err.Error(), "libsoccr_save() failed") || strings.Contains(err.Error(), "soccr.c")
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
