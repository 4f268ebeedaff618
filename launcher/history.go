package launcher

// cruz events (and -f, which follows) and cruz history: what happened to a
// job, and its checkpoints over time. Both work after cruz rm: the agent
// then answers from the store, where the job's coordinator keeps its event
// log and the checkpoints' manifests.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
	"github.com/spf13/cobra"
)

// followInterval is how often cruz events -f asks the agent for new events:
// one small request each time, no stream to keep alive across the job's
// moves between nodes.
const followInterval = 500 * time.Millisecond

func (c *cli) eventsCommand() *cobra.Command {
	var asJSON, follow bool
	cmd := command("events [--json] [-f] JOB", "what happened to a job",
		`What happened to a job and what the agent decided, in order. After cruz rm
(without --checkpoints), or when the job's node is gone, the events come
from the store (give the job's id then; cruz says so on stderr). With -f,
cruz prints the events so far and then new ones as they come, until the
job no longer runs (exit status 0) or Ctrl-C.`, [2]int{1, 1},
		func(cmd *cobra.Command, a []string) error {
			if asJSON && follow {
				return usagef(cmd, "--json and -f do not go together: --json prints the events so far as one document")
			}
			ag, err := c.agent()
			if err != nil {
				return err
			}
			fetch := func(ctx context.Context) (api.EventList, error) {
				var list api.EventList
				err := ag.Call(ctx, "GET", "/v1/jobs/"+url.PathEscape(a[0])+"/events", nil, &list)
				return list, err
			}
			if follow {
				running := func(ctx context.Context) (bool, error) {
					j, err := ag.Job(ctx, a[0])
					if errors.Is(err, api.ErrNotFound) {
						return false, nil // removed, or only the store has it
					}
					return err == nil && j.State.HoldsPods(), err
				}
				return followEvents(c.ctx, c.stdout, fetch, running, followInterval)
			}
			list, err := fetch(c.ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(c.stdout, list)
			}
			if list.FromStore {
				fmt.Fprintf(c.stderr, "cruz: no agent knows job %s: its events as the store kept them\n", a[0])
			}
			printEvents(c.stdout, list.Events)
			return nil
		})
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "go on printing new events until the job no longer runs")
	return cmd
}

func printEvents(w io.Writer, evs []api.Event) {
	for _, e := range evs {
		fmt.Fprintf(w, "%s  %-18s %s\n", e.Time.Local().Format("15:04:05.000"), e.Kind, e.Message)
	}
}

// followEvents prints the job's events, then every interval the new ones,
// until running says the job no longer runs: then once more (an event
// written as the job ended, such as exited, comes just after its state)
// and it returns nil. Cancelling ctx (Ctrl-C) ends it too, with nil.
// Events are only ever appended, so the new ones are those past the count
// already printed.
func followEvents(ctx context.Context, w io.Writer, fetch func(context.Context) (api.EventList, error),
	running func(context.Context) (bool, error), interval time.Duration) error {
	printed, last := 0, false
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		list, err := fetch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		if len(list.Events) > printed {
			printEvents(w, list.Events[printed:])
			printed = len(list.Events)
		}
		// The store's events are those of a job no agent knows: over.
		if last || list.FromStore {
			return nil
		}
		on, err := running(ctx)
		if err != nil && ctx.Err() == nil {
			return err
		}
		last = !on
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (c *cli) historyCommand() *cobra.Command {
	var asJSON bool
	cmd := command("history [--json] JOB", "a job's checkpoints over time, deleted ones too",
		`A job's checkpoints over time: each one's id, when it was taken, its size,
how long the job was held and how long each phase took, and whether it is
kept or was deleted (by the retention policy, cruz checkpoints ...). The
kept ones come from their manifests in the store, the deleted ones from the
job's event log. It works after cruz rm (without --checkpoints) and on any
node, like cruz events.`, [2]int{1, 1},
		func(_ *cobra.Command, a []string) error {
			ag, err := c.agent()
			if err != nil {
				return err
			}
			cks, err := ag.Checkpoints(c.ctx, a[0])
			if err != nil {
				return err
			}
			var evs api.EventList
			if err := ag.Call(c.ctx, "GET", "/v1/jobs/"+url.PathEscape(a[0])+"/events", nil, &evs); err != nil && !errors.Is(err, api.ErrNotFound) {
				return err
			}
			h := buildHistory(cks.Checkpoints, evs.Events)
			if asJSON {
				return printJSON(c.stdout, struct {
					Checkpoints []historyEntry `json:"checkpoints"`
				}{h})
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CHECKPOINT\tCREATED\tSIZE\tHELD\tBLOCK\tDUMP\tCOMMIT\tTOTAL\tSTATUS")
			for _, e := range h {
				ms := func(p string) string {
					if v, ok := e.Phases[p]; ok {
						return fmt.Sprintf("%dms", v)
					}
					return "-"
				}
				size := "-"
				if e.Status != statusDeleted {
					size = humanBytes(e.Bytes)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, e.Created.Local().Format(time.DateTime), size,
					ms("held"), ms("block"), ms("dump"), ms("commit"), ms("total"), e.Status)
			}
			tw.Flush()
			for _, p := range cks.Problems {
				fmt.Fprintf(c.stderr, "cruz: skipped: %s\n", p)
			}
			return nil
		})
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// Statuses of a checkpoint in a history.
const (
	statusKept        = "kept"
	statusKeptStopped = "kept (stopped the job)"
	statusDeleted     = "deleted"
)

// historyEntry is one checkpoint of a job's history.
type historyEntry struct {
	ID      string           `json:"id"`
	Created time.Time        `json:"created"`
	Bytes   int64            `json:"bytes,omitempty"`
	Phases  map[string]int64 `json:"phases_ms,omitempty"`
	Status  string           `json:"status"`
}

// buildHistory merges the checkpoints the store keeps with those the
// events name (the events of a committed checkpoint: checkpoint, stopped),
// oldest first: a checkpoint only an event names was deleted. Its time and
// duration (the event's, from its start to its commit) are all that is
// known of it.
func buildHistory(cks []api.Checkpoint, evs []api.Event) []historyEntry {
	byID := map[string]*historyEntry{}
	for _, ck := range cks {
		st := statusKept
		if ck.Stopped {
			st = statusKeptStopped
		}
		byID[ck.ID] = &historyEntry{ID: ck.ID, Created: ck.Created, Bytes: ck.Bytes, Phases: ck.Phases, Status: st}
	}
	for _, e := range evs {
		if e.Checkpoint == "" || (e.Kind != api.EventCheckpoint && e.Kind != api.EventStopped) {
			continue
		}
		if _, ok := byID[e.Checkpoint]; ok {
			continue
		}
		h := &historyEntry{ID: e.Checkpoint, Created: e.Time, Status: statusDeleted}
		if e.Millis > 0 {
			h.Phases = map[string]int64{"total": e.Millis}
		}
		byID[e.Checkpoint] = h
	}
	out := make([]historyEntry, 0, len(byID))
	for _, h := range byID {
		out = append(out, *h)
	}
	sort.Slice(out, func(i, j int) bool { return ckptNumber(out[i].ID) < ckptNumber(out[j].ID) })
	return out
}

// ckptNumber is the number of a checkpoint id (ckpt-0012: 12), for order.
func ckptNumber(id string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(id, "ckpt-"))
	if err != nil {
		return 1 << 30
	}
	return n
}
