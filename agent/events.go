package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/cruz-hpc/cruz/internal/store"
)

// A job's event log: what happened to it and what the agent decided. The
// coordinator writes each event twice: to the job's run directory (tmpfs,
// gone with cruz rm), which the agent reads while it knows the job, and to
// the job's directory in the store (store.AppendEvent: bounded, and kept by
// a plain cruz rm), which any agent reads once none knows the job.

// eventsPath is the job's event log: one JSON event per line.
func (a *Agent) eventsPath(id string) string { return filepath.Join(a.jobDir(id), "events.jsonl") }

// event appends e to the job's event log and to the agent's log.
func (a *Agent) event(j *job, e api.Event) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	a.eventsMu.Lock()
	defer a.eventsMu.Unlock()
	f, err := os.OpenFile(a.eventsPath(j.id()), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		a.log.Warn("writing the job's event log", "job", j.id(), "err", err)
		return
	}
	defer f.Close()
	_, _ = f.Write(append(b, '\n'))
	a.log.Info("event", "job", j.id(), "kind", e.Kind, "msg", e.Message)
	a.storeEvent(j, e, b)
}

// storeEvent appends e (marshalled: line) to the job's event log in the
// store. A failure is logged, never the job's: events are a record.
func (a *Agent) storeEvent(j *job, e api.Event, line []byte) {
	if a.store == nil || j.storeGone.Load() {
		return
	}
	note, _ := json.Marshal(api.Event{Time: e.Time, Kind: api.EventEventsLimit, Node: a.node,
		Message: fmt.Sprintf("the job's event log in the store reached its bound (%s): later events are not kept there", humanSize(store.MaxEventsBytes))})
	err := a.store.AppendEvent(j.id(), j.storeOwner(), line, note)
	switch {
	case errors.Is(err, store.ErrEventsFull):
		a.log.Debug("the job's event log in the store is full", "job", j.id(), "kind", e.Kind)
	case err != nil:
		a.log.Warn("writing the job's event log in the store", "job", j.id(), "err", err)
	}
}

// Events returns a job's event log.
func (a *Agent) Events(c caller, ref string) (api.EventList, error) {
	j, err := a.lookup(c, ref)
	if err != nil {
		return api.EventList{}, err
	}
	out := api.EventList{Events: []api.Event{}}
	f, err := os.Open(a.eventsPath(j.id()))
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return out, err
	}
	defer f.Close()
	return parseEvents(f)
}

// parseEvents reads JSON events, one a line; malformed lines are skipped.
func parseEvents(r io.Reader) (api.EventList, error) {
	out := api.EventList{Events: []api.Event{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e api.Event
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			out.Events = append(out.Events, e)
		}
	}
	return out, sc.Err()
}

// orStore answers a request about a job that no agent knows (removed with
// a plain cruz rm, or its coordinator's node gone) from the store, with
// fromStore. Only a user's own request is: an agent asked by a peer says
// it does not know the job, so that the peer asks the others.
func (a *Agent) orStore(h, fromStore handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, c caller) error {
		err := h(w, r, c)
		if !errors.Is(err, api.ErrNotFound) || fromPeer(r.Context()) || a.store == nil {
			return err
		}
		if serr := fromStore(w, r, c); !errors.Is(serr, store.ErrNotFound) {
			return serr
		}
		return err
	}
}

// storeJob is the job id of a request answered from the store; a name
// that is no valid id is a job the store cannot have.
func storeJob(r *http.Request) (string, error) {
	id := r.PathValue("job")
	if store.ValidateJobID(id) != nil {
		return "", store.ErrNotFound
	}
	return id, nil
}

// storeErr turns a refusal of the store into the API's.
func storeErr(err error) error {
	if errors.Is(err, store.ErrOwner) {
		return ownerErr(fmt.Errorf("%w (root may read any job's)", err))
	}
	return err
}

// handleStoreEvents answers GET /v1/jobs/{job}/events from the job's event
// log in the store, for its owner or root.
func (a *Agent) handleStoreEvents(w http.ResponseWriter, r *http.Request, c caller) error {
	id, err := storeJob(r)
	if err != nil {
		return err
	}
	data, err := a.store.ReadEvents(id, c.UID)
	if err != nil {
		return storeErr(err)
	}
	list, err := parseEvents(bytes.NewReader(data))
	if err != nil {
		return err
	}
	list.FromStore = true
	writeJSON(w, http.StatusOK, list)
	return nil
}

// handleStoreCheckpoints answers GET /v1/jobs/{job}/checkpoints from the
// store, for the job's owner or root.
func (a *Agent) handleStoreCheckpoints(w http.ResponseWriter, r *http.Request, c caller) error {
	id, err := storeJob(r)
	if err != nil {
		return err
	}
	if err := a.store.MayRead(id, c.UID); err != nil {
		return storeErr(err)
	}
	list, problems, err := a.store.List(id)
	if err != nil {
		return err
	}
	out := api.CheckpointList{Checkpoints: []api.Checkpoint{}, Problems: problems, FromStore: true}
	for i := range list {
		out.Checkpoints = append(out.Checkpoints, a.checkpointInfo(&list[i]))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
