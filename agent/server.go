package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/joblog"
	"github.com/cruz-hpc/cruz/internal/node"
	"github.com/cruz-hpc/cruz/internal/store"
	"github.com/cruz-hpc/cruz/internal/version"
	"golang.org/x/sys/unix"
)

type callerKey struct{}

// peerPIDKey holds the pid of a unix socket's peer (at connect time).
type peerPIDKey struct{}

// peerPID is the pid of the local process that sent the request; 0 for
// requests from other agents.
func peerPID(ctx context.Context) int {
	pid, _ := ctx.Value(peerPIDKey{}).(int)
	return pid
}

// peerCaller reads the peer credentials of a unix socket connection, and the
// peer's supplementary groups from /proc (checked to belong to the same uid).
func peerCaller(conn net.Conn) (caller, int, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return caller{}, 0, errors.New("not a unix socket connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return caller{}, 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return caller{}, 0, err
	}
	if cerr != nil {
		return caller{}, 0, cerr
	}
	c := caller{UID: cred.Uid, GID: cred.Gid, User: strconv.Itoa(int(cred.Uid))}
	if u, err := user.LookupId(strconv.Itoa(int(cred.Uid))); err == nil {
		c.User = u.Username
	}
	c.Groups = peerGroups(int(cred.Pid), cred.Uid)
	return c, int(cred.Pid), nil
}

func peerGroups(pid int, uid uint32) []uint32 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil
	}
	var groups []uint32
	uidOK := false
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(v)
			uidOK = len(f) > 0 && f[0] == strconv.Itoa(int(uid))
		}
		if v, ok := strings.CutPrefix(line, "Groups:"); ok {
			for _, g := range strings.Fields(v) {
				if n, err := strconv.ParseUint(g, 10, 32); err == nil {
					groups = append(groups, uint32(n))
				}
			}
		}
	}
	if !uidOK {
		return nil
	}
	return groups
}

// Serve answers the API on the unix socket in the config until ctx ends.
func (a *Agent) Serve(ctx context.Context) error {
	sock := a.cfg.Agent.Socket
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		return fmt.Errorf("create socket directory: %w", err)
	}
	if err := checkSocketFree(sock); err != nil {
		return err
	}
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", sock, err)
	}
	// Anyone may connect; every request is then checked against the
	// caller's uid.
	if err := os.Chmod(sock, 0o666); err != nil {
		ln.Close()
		return fmt.Errorf("chmod socket: %w", err)
	}
	srv := &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, conn net.Conn) context.Context {
			c, pid, err := peerCaller(conn)
			if err != nil {
				a.log.Warn("refusing a connection without peer credentials", "err", err)
				return ctx
			}
			return context.WithValue(context.WithValue(ctx, callerKey{}, c), peerPIDKey{}, pid)
		},
	}
	// Before any TCP port listens: pods never get a moment to reach one.
	guarded, err := a.guardPods()
	if err != nil {
		ln.Close()
		return err
	}
	unguard := func() {
		if guarded {
			if err := node.UnguardAgentPort(context.Background()); err != nil {
				a.log.Warn("removing the pods' guard of the agent's TCP ports", "err", err)
			}
		}
	}
	tcpSrv, tcpLn, err := a.listenTCP()
	if err != nil {
		ln.Close()
		unguard()
		return err
	}
	metSrv, metLn, err := a.listenMetrics()
	if err != nil {
		ln.Close()
		if tcpLn != nil {
			tcpLn.Close()
		}
		unguard()
		return err
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
		// End the jobs first, so that every attached client gets the
		// frame that says why, then let the streams drain and close.
		a.Shutdown(context.Background())
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		if tcpSrv != nil {
			wg.Add(1)
			go func() { defer wg.Done(); _ = tcpSrv.Shutdown(sctx) }()
		}
		if metSrv != nil {
			wg.Add(1)
			go func() { defer wg.Done(); _ = metSrv.Shutdown(sctx) }()
		}
		_ = srv.Shutdown(sctx)
		wg.Wait()
		unguard()
	}()
	if tcpSrv != nil {
		a.log.Info("listening", "tcp", tcpLn.Addr().String())
		go func() {
			if err := tcpSrv.Serve(tcpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("TCP API stopped", "err", err)
			}
		}()
	}
	if metSrv != nil {
		a.log.Info("serving metrics", "address", metLn.Addr().String())
		go func() {
			if err := metSrv.Serve(metLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("metrics server stopped", "err", err)
			}
		}()
	}
	a.log.Info("listening", "socket", sock)
	// Under systemd (Type=notify), the agent is ready once its socket
	// serves: the listener exists, so connections queue from now on.
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady+"\nSTATUS=serving on "+sock); err != nil {
		a.log.Warn("telling the service manager that the agent is ready", "err", err)
	}
	err = srv.Serve(ln)
	_ = os.Remove(sock)
	if errors.Is(err, http.ErrServerClosed) {
		// Serve returns as soon as the shutdown begins: wait for it to
		// end (streams drained, the port's guard removed) before cruzd
		// exits.
		<-stopped
		return nil
	}
	return err
}

// checkSocketFree refuses to go on when another agent answers on sock.
func checkSocketFree(sock string) error {
	if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("another cruzd already listens on %s: stop it first, or give this one another agent.socket", sock)
	}
	return nil
}

// Handler is the API.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/version", a.withCaller(a.handleVersion))
	mux.HandleFunc("GET /v1/jobs", a.withCaller(a.handleJobs))
	mux.HandleFunc("GET /v1/queue", a.withCaller(a.handleQueue))
	mux.HandleFunc("POST /v1/jobs", a.withCaller(a.handleRun))
	mux.HandleFunc("GET /v1/jobs/{job}", a.withCaller(a.orPeers(a.handleJob)))
	mux.HandleFunc("DELETE /v1/jobs/{job}", a.withCaller(a.handleRemove))
	mux.HandleFunc("POST /v1/jobs/{job}/checkpoint", a.withCaller(a.orPeers(a.handleCheckpoint)))
	mux.HandleFunc("GET /v1/jobs/{job}/checkpoints", a.withCaller(a.orStore(a.orPeers(a.handleCheckpoints), a.handleStoreCheckpoints)))
	mux.HandleFunc("POST /v1/jobs/{job}/restart", a.withCaller(a.handleRestart))
	mux.HandleFunc("GET /v1/jobs/{job}/attach", a.withCaller(a.handleAttach))
	mux.HandleFunc("POST /v1/jobs/{job}/signal", a.withCaller(a.handleSignal))
	mux.HandleFunc("POST /v1/jobs/{job}/migrate", a.withCaller(a.handleMigrate))
	mux.HandleFunc("GET /v1/jobs/{job}/events", a.withCaller(a.orStore(a.orPeers(a.handleEvents), a.handleStoreEvents)))
	// srun --cruz (slurm.go).
	mux.HandleFunc("POST /v1/slurm/steps", a.withCaller(a.handleRunSlurm))
	mux.HandleFunc("POST /v1/slurm/end", a.withCaller(a.handleSlurmEnd))
	mux.HandleFunc("POST /v1/drain", a.withCaller(a.handleDrain))
	mux.HandleFunc("GET /v1/store", a.withCaller(a.handleStore))
	// Between agents only (see nodeops.go).
	mux.HandleFunc("POST /v1/node/{op}", a.withCaller(a.handleNodeOp))
	mux.HandleFunc("GET /v1/node/jobs/{job}/output", a.withCaller(a.handleNodeOutput))
	return mux
}

type handlerFunc func(w http.ResponseWriter, r *http.Request, c caller) error

func (a *Agent) withCaller(h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, ok := r.Context().Value(callerKey{}).(caller)
		if !ok {
			writeError(w, api.Errorf(api.ErrForbidden, "the agent could not tell who you are (no peer credentials): connect through its unix socket"))
			return
		}
		if err := h(w, r, c); err != nil {
			a.logRefusal(r, c, err)
			writeError(w, err)
		}
	}
}

// logRefusal logs a request that failed, in one line: who asked (uid and
// user), what (method and path) and why (the error the caller gets). A
// refusal (the caller may not do it) is a warning, an admin's business;
// anything else (bad input, no such job) is information.
func (a *Agent) logRefusal(r *http.Request, c caller, err error) {
	level, msg := slog.LevelInfo, "request failed"
	if errors.Is(err, api.ErrForbidden) || errors.Is(err, api.ErrUnauthenticated) {
		level, msg = slog.LevelWarn, "refused"
	}
	a.log.Log(r.Context(), level, msg, "uid", c.UID, "user", c.User, "what", r.Method+" "+r.URL.Path, "why", err.Error())
}

// writeError answers err with the status of its kind (internal/api).
func writeError(w http.ResponseWriter, err error) {
	writeJSON(w, api.HTTPStatus(err), api.ErrorBody{Error: err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decode reads a JSON request body strictly: unknown fields are an error.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 4<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return api.Errorf(api.ErrInvalid, "bad request body: %w", err)
	}
	return nil
}

func (a *Agent) handleVersion(w http.ResponseWriter, _ *http.Request, _ caller) error {
	writeJSON(w, http.StatusOK, api.Version{Agent: version.String(), CRIU: a.CRIUVersion(), CRIUSource: a.CRIUSource(), Node: a.node, MPIs: a.mpis()})
	return nil
}

func (a *Agent) handleJobs(w http.ResponseWriter, _ *http.Request, c caller) error {
	list := api.JobList{Jobs: []api.Job{}}
	for _, j := range a.jobList() {
		if c.UID == 0 || j.rec.UID == c.UID {
			list.Jobs = append(list.Jobs, a.info(j))
		}
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

func (a *Agent) handleJob(w http.ResponseWriter, r *http.Request, c caller) error {
	j, err := a.lookup(c, r.PathValue("job"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a.info(j))
	return nil
}

// info is the API view of a job.
func (a *Agent) info(j *job) api.Job {
	j.mu.Lock()
	rec := j.rec
	j.mu.Unlock()
	pids := map[string]int{}
	for _, s := range a.local.Sets(func(id string) bool { return id == rec.ID }) {
		pids = s.Pods
	}
	out := api.Job{ID: rec.ID, Name: rec.Name, User: rec.User, UID: rec.UID, State: rec.State, Message: rec.Message,
		NP: rec.Request.NP, Argv: rec.Request.Argv, ExitCode: rec.ExitCode, Created: rec.Created, Updated: rec.Updated,
		LastCheckpoint: rec.LastCheckpoint, Pods: []api.Pod{}, Policy: rec.Policy.String(), Spares: rec.Spares}
	out.RestartPolicy = rec.Policy.Restart
	if s := rec.Request.Slurm; s != nil {
		out.Slurm = &api.SlurmInfo{JobID: s.JobID, StepID: s.StepID, Restarts: s.Restarts}
	}
	j.mu.Lock()
	if j.sup != nil {
		out.Restarts = j.sup.restarts.Count(a.policyValuesFor(rec), time.Now())
	}
	j.mu.Unlock()
	for _, p := range rec.Pods {
		out.Pods = append(out.Pods, api.Pod{Name: p.Name, Role: p.Role, Rank: p.Rank, Ranks: p.Ranks, Hostname: p.Hostname,
			IP: p.Addr.Addr().String(), MAC: p.MAC().String(), PID: pids[p.Name], Node: nodeOr(p.Node, a.node)})
	}
	if list, _, err := a.store.List(rec.ID); err == nil {
		out.Checkpoints = len(list)
		if len(list) > 0 {
			out.LastCheckpoint = list[len(list)-1].ID
		}
	}
	return out
}

func (a *Agent) handleRun(w http.ResponseWriter, r *http.Request, c caller) error {
	var req api.RunRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	j, err := a.Run(r.Context(), c, req)
	if j == nil {
		return err
	}
	// A job that failed to start still has output (mpiexec's complaint,
	// say) and an end: the client sees them like any other run's.
	a.stream(w, r, j, 0)
	return nil
}

func (a *Agent) handleRestart(w http.ResponseWriter, r *http.Request, c caller) error {
	var req api.RestartRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Progress {
		// The restore's progress frames come first; a refusal before the
		// restore starts is still answered with its status.
		fs := newFrameSender(w)
		ctx := withProgress(r.Context(), func(p api.Progress) { fs.send(api.Frame{Progress: &p}) })
		j, from, err := a.Restart(ctx, c, r.PathValue("job"), req.Checkpoint, req.Nodes)
		switch {
		case err != nil && !fs.started():
			return err
		case err != nil:
			fs.send(api.Frame{Error: err.Error()})
		case fs.started():
			a.streamFrames(w, r, j, 0, from)
		default:
			a.stream(w, r, j, from)
		}
		return nil
	}
	j, from, err := a.Restart(r.Context(), c, r.PathValue("job"), req.Checkpoint, req.Nodes)
	if err != nil {
		return err
	}
	a.stream(w, r, j, from)
	return nil
}

func (a *Agent) handleAttach(w http.ResponseWriter, r *http.Request, c caller) error {
	j, err := a.lookup(c, r.PathValue("job"))
	if err != nil {
		return err
	}
	j.mu.Lock()
	from := j.rec.OutputStart
	j.mu.Unlock()
	a.stream(w, r, j, from)
	return nil
}

// stream sends the job, then its output frames from offset from, until the
// frame that ends the run or the client goes away (the job goes on).
func (a *Agent) stream(w http.ResponseWriter, r *http.Request, j *job, from int64) {
	a.streamWith(w, r, j, 0, from)
}

// streamWith is stream that first sends the stdout and stderr frames of
// the log before offset replayTo (a requeued Slurm step's earlier output),
// read from the log as a stream.
func (a *Agent) streamWith(w http.ResponseWriter, r *http.Request, j *job, replayTo int64, from int64) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	a.streamFrames(w, r, j, replayTo, from)
}

// streamFrames is streamWith on a stream whose header was sent.
func (a *Agent) streamFrames(w http.ResponseWriter, r *http.Request, j *job, replayTo int64, from int64) {
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	info := a.info(j)
	if err := enc.Encode(api.Frame{Job: &info}); err != nil {
		return
	}
	if replayTo > 0 {
		if err := joblog.EachOutputFrame(j.out.Path(), replayTo, func(f api.Frame) error { return enc.Encode(f) }); err != nil {
			a.log.Warn("replaying a Slurm step's earlier output", "job", j.id(), "err", err)
			return
		}
	}
	if flusher != nil {
		flusher.Flush()
	}
	_ = j.out.Follow(r.Context(), from, func(f api.Frame) error {
		if err := enc.Encode(f); err != nil {
			return err
		}
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	})
}

func (a *Agent) handleCheckpoint(w http.ResponseWriter, r *http.Request, c caller) error {
	var req api.CheckpointRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Progress {
		// A job this agent does not know is refused before the stream
		// starts, so that orPeers asks the other agents.
		if _, err := a.lookup(c, r.PathValue("job")); err != nil {
			return err
		}
		return a.progressStream(w, r, func(ctx context.Context) (api.Frame, error) {
			m, err := a.Checkpoint(ctx, c, r.PathValue("job"), req.Stop, time.Duration(req.WaitSeconds)*time.Second)
			if err != nil {
				return api.Frame{}, err
			}
			ck := a.checkpointInfo(m)
			return api.Frame{Checkpoint: &ck}, nil
		})
	}
	// The checkpoint must not be cut short because the client went away.
	m, err := a.Checkpoint(context.WithoutCancel(r.Context()), c, r.PathValue("job"), req.Stop, time.Duration(req.WaitSeconds)*time.Second)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a.checkpointInfo(m))
	return nil
}

func (a *Agent) checkpointInfo(m *store.Manifest) api.Checkpoint {
	ck := api.Checkpoint{ID: m.ID, Job: m.Job, Created: m.Created, Stopped: m.Stopped, Bytes: m.Bytes,
		Phases: m.Phases, Dir: filepath.Join(a.store.Root(), m.Job, m.ID)}
	// The time to a durable checkpoint: the store prepared (checkpoints
	// before "prepare" counted it in "block"), traffic held, pods dumped,
	// traffic released, committed; and how long the job was held (older
	// checkpoints resumed it after the commit).
	if _, ok := ck.Phases["total"]; !ok && ck.Phases != nil {
		ck.Phases["total"] = ck.Phases["prepare"] + ck.Phases["block"] + ck.Phases["dump"] + ck.Phases["resume"] + ck.Phases["commit"]
	}
	if _, ok := ck.Phases["held"]; !ok && ck.Phases != nil && !m.Stopped {
		ck.Phases["held"] = ck.Phases["block"] + ck.Phases["dump"] + ck.Phases["commit"]
	}
	for _, p := range m.Pods {
		ck.Pods = append(ck.Pods, api.CheckpointPod{Name: p.Name, Bytes: p.Bytes, DumpMS: p.DumpMillis})
	}
	return ck
}

func (a *Agent) handleCheckpoints(w http.ResponseWriter, r *http.Request, c caller) error {
	j, err := a.lookup(c, r.PathValue("job"))
	if err != nil {
		return err
	}
	if err := a.store.CheckOwner(j.id(), j.storeOwner()); err != nil {
		return ownerErr(err)
	}
	list, problems, err := a.store.List(j.id())
	if err != nil {
		return err
	}
	out := api.CheckpointList{Checkpoints: []api.Checkpoint{}, Problems: problems}
	for i := range list {
		out.Checkpoints = append(out.Checkpoints, a.checkpointInfo(&list[i]))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *Agent) handleEvents(w http.ResponseWriter, r *http.Request, c caller) error {
	list, err := a.Events(c, r.PathValue("job"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

func (a *Agent) handleSignal(w http.ResponseWriter, r *http.Request, c caller) error {
	var req api.SignalRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if err := a.Signal(c, r.PathValue("job"), syscall.Signal(req.Signal)); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct{}{})
	return nil
}

func (a *Agent) handleRemove(w http.ResponseWriter, r *http.Request, c caller) error {
	if err := a.Remove(c, r.PathValue("job"), r.URL.Query().Get("checkpoints") == "1"); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct{}{})
	return nil
}
