package agent

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
)

// A job's event log: what happened to it and what the agent decided.

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
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e api.Event
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			out.Events = append(out.Events, e)
		}
	}
	return out, sc.Err()
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
