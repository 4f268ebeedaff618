package agent

// When an agent dies (a crash, a kill -9) the pods it held keep running. A
// new agent on the node takes back the pods of jobs that another node
// coordinates: the coordinator still runs them, and it retries what it asks
// of this node until the node answers again. The pods of jobs this node
// coordinated are removed instead (the job is lost with its coordinator).

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"golang.org/x/sys/unix"
)

// readopt takes back the live pods of a set left by a previous agent and
// returns the names of their host veths; nil if nothing was taken back.
func (a *Agent) readopt(dir string, rec setRecord) []string {
	s := &podSet{job: rec.Job, uid: rec.UID, gid: rec.GID, coordinator: rec.Coordinator, dir: dir, pods: map[string]*podRuntime{}}
	out, err := openOutputLog(filepath.Join(dir, "output"), rec.UID)
	if err != nil {
		a.log.Warn("cannot take back a pod set", "job", rec.Job, "err", err)
		return nil
	}
	s.out = out
	s.sink = func(stream string, data []byte) {
		if data != nil {
			out.append(api.Frame{Stream: stream, Data: data})
		}
	}
	var veths []string
	for name, ino := range rec.Netns {
		spec, ok := rec.Specs[name]
		if !ok {
			killNetns(ino)
			continue
		}
		p, err := adoptPod(spec, ino, s.sink)
		if err != nil {
			a.log.Warn("removing a pod that cannot be taken back", "job", rec.Job, "pod", name, "err", err)
			killNetns(ino)
			continue
		}
		// A checkpoint or migration may have been cut short with the old
		// agent: the pod runs on. Its traffic stays held (or is held now)
		// until its coordinator confirms that it still counts on this pod
		// here: it may have restored the job elsewhere meanwhile, and two
		// pods with one address must never both talk.
		p.resumeStopped()
		if err := blockPodTraffic(context.Background(), p.nsPath); err != nil {
			a.log.Warn("holding the traffic of a pod taken back", "pod", name, "err", err)
		}
		s.pods[name] = p
		veths = append(veths, hostVethName(name))
		a.log.Info("took back a pod of a job coordinated by another node", "job", rec.Job, "pod", name, "pid", p.pid, "coordinator", rec.Coordinator)
	}
	if len(s.pods) == 0 {
		out.close()
		return nil
	}
	a.sets[rec.Job] = s
	a.persistSet(s)
	go a.confirmAdopted(s)
	return veths
}

// adoptPod makes a podRuntime of a running pod: its PID 1 (found in its
// netns), the netns, and new read ends of its stdout and stderr pipes.
func adoptPod(spec podSpec, ino uint64, sink outputSink) (*podRuntime, error) {
	pid := podInitPID(ino)
	if pid == 0 {
		return nil, errors.New("no PID 1 of the pod is running")
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Ino != ino {
		f.Close()
		return nil, fmt.Errorf("pid %d left the pod's netns", pid)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	ns := &podNetns{f: f, ino: ino}
	p := &podRuntime{spec: spec, ns: ns, nsPath: ns.path(), pid: pid, pipes: map[string]string{},
		exited: make(chan struct{}), statusUnknown: true}
	for fd, stream := range map[int]string{1: "stdout", 2: "stderr"} {
		link := fmt.Sprintf("/proc/%d/fd/%d", pid, fd)
		target, err := os.Readlink(link)
		if err != nil || !strings.HasPrefix(target, "pipe:") {
			continue
		}
		// Opening a pipe through /proc gives a new end of the same pipe.
		r, err := os.OpenFile(link, os.O_RDONLY, 0)
		if err != nil {
			continue
		}
		p.copyPipe(target, stream, r, sink)
	}
	go func() {
		defer unix.Close(pidfd)
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, -1); err == nil || !errors.Is(err, unix.EINTR) {
				break
			}
		}
		close(p.exited)
	}()
	return p, nil
}

// podInitPID finds the PID 1 of the pod whose netns has inode ino.
func podInitPID(ino uint64) int {
	for _, pid := range processesInNetns(ino) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
				if f := strings.Fields(v); len(f) > 1 && f[len(f)-1] == "1" {
					return pid
				}
			}
		}
	}
	return 0
}

// confirmAdopted asks the job's coordinator whether it still counts on the
// pods taken back here: those it does get their traffic back, the others
// (the job ended, or was restored elsewhere while this node's agent was
// away) are removed. An unreachable coordinator is asked again for a
// minute; after that the pods are removed: held pods help no one.
func (a *Agent) confirmAdopted(s *podSet) {
	// The agent asks for itself (as root): the set's record keeps the
	// owner's uid, not the whole identity a request for the user carries.
	nc, err := a.client(s.coordinator, rootCaller)
	if err != nil || nc.remote == nil {
		return
	}
	for try := 0; try < 60; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var info api.Job
		err := nc.remote.Call(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(s.job), nil, &info)
		cancel()
		if err != nil && !isStatus(err, http.StatusNotFound) {
			time.Sleep(time.Second)
			continue
		}
		here := map[string]bool{}
		if err == nil && holdsPods(info.State) {
			for _, p := range info.Pods {
				if p.Node == a.node {
					here[p.Name] = true
				}
			}
		}
		pods, _ := s.list(nil)
		var gone []string
		for _, p := range pods {
			if !here[p.spec.Name] {
				gone = append(gone, p.spec.Name)
			}
		}
		if len(gone) > 0 {
			a.log.Info("removing pods taken back that their coordinator no longer runs here", "job", s.job, "pods", gone)
			_, _ = a.nodeOp(context.Background(), rootCaller, opDestroy, nodeReq{Job: s.job, Pods: gone})
		}
		for _, p := range pods {
			if here[p.spec.Name] {
				if err := unblockPodTraffic(context.Background(), p.nsPath); err != nil {
					a.log.Warn("releasing a pod taken back", "pod", p.spec.Name, "err", err)
				}
			}
		}
		return
	}
	a.log.Warn("the coordinator of pods taken back does not answer; removing them", "job", s.job, "coordinator", s.coordinator)
	_, _ = a.nodeOp(context.Background(), rootCaller, opDestroy, nodeReq{Job: s.job})
}
