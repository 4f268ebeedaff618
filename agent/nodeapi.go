package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cruz-hpc/cruz/internal/api"
)

// The HTTP side of the node operations (internal/node): only other agents
// may ask them, over the TCP API, signed with the cluster key.

// handleNodeOp serves POST /v1/node/{op}: only to other agents (requests
// signed with the cluster key), never to users on the unix socket.
func (a *Agent) handleNodeOp(w http.ResponseWriter, r *http.Request, c caller) error {
	if !fromPeer(r.Context()) {
		return api.Errorf(api.ErrForbidden, "node operations are for cruz agents only (signed with the cluster key over the TCP API)")
	}
	var req api.NodeRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	op := api.NodeOp(r.PathValue("op"))
	ctx := r.Context()
	if op != api.OpWait {
		// A dump or restore must not be cut short because the
		// coordinator's connection broke: it is undone by abort.
		ctx = context.WithoutCancel(ctx)
	}
	resp, err := a.local.Do(ctx, c, op, req)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// handleNodeOutput streams what a job's pods on this node print, from an
// offset of the node's log, for the job's coordinator.
func (a *Agent) handleNodeOutput(w http.ResponseWriter, r *http.Request, c caller) error {
	if !fromPeer(r.Context()) {
		return api.Errorf(api.ErrForbidden, "node operations are for cruz agents only (signed with the cluster key over the TCP API)")
	}
	out, err := a.local.OutputLog(c, r.PathValue("job"))
	if err != nil {
		return err
	}
	var from int64
	if v := r.URL.Query().Get("from"); v != "" {
		if _, err := fmt.Sscanf(v, "%d", &from); err != nil || from < 0 {
			return api.Errorf(api.ErrInvalid, "from=%q is not an offset", v)
		}
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	if flusher != nil {
		flusher.Flush()
	}
	_ = out.FollowOffsets(r.Context(), from, func(f api.Frame, end int64) error {
		if err := enc.Encode(api.NodeFrame{Frame: f, End: end}); err != nil {
			return err
		}
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	})
	return nil
}

// peerKey marks a request that came over the TCP API, signed with the
// cluster key: only agents hold the key.
type peerKey struct{}

func fromPeer(ctx context.Context) bool {
	v, _ := ctx.Value(peerKey{}).(bool)
	return v
}

// nodeTimeout bounds a node operation that is not a dump, restore or wait
// (those get criu.timeout more).
const nodeTimeout = 10 * time.Second

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
