package node

import (
	"bytes"
	"encoding/json"
	"net/http"
	"time"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/internal/loopback"
	"github.com/rbee-project/rbee/internal/sse"
	"github.com/rbee-project/rbee/node/auth"
	"github.com/rbee-project/rbee/node/jobs"
)

// feedInterval is how often the cluster feed recomputes its snapshot; a
// snapshot is sent only when it changed, so idle pages cost nothing.
const feedInterval = time.Second

// Snapshot returns the current cluster snapshot with every job (the
// admin's view).
func (n *Node) Snapshot() api.ClusterSnapshot {
	return n.snapshotFor(auth.Principal{Perms: auth.Admin, Owner: auth.OwnerAdmin})
}

// snapshotFor is the snapshot p may see: the jobs p may list (its own; an
// admin's, all), like GET /v1/jobs; jobs are private.
func (n *Node) snapshotFor(p auth.Principal) api.ClusterSnapshot {
	s := api.ClusterSnapshot{Status: n.status(true), Jobs: []api.JobSummary{}, InsecureHTTP: !loopback.HostPort(n.cfg.HTTPAddr)}
	for _, j := range n.jobs.List() {
		if len(s.Jobs) >= 50 {
			break
		}
		if !p.MayRead(j.Owner, true) {
			continue
		}
		js := api.JobSummary{ID: j.ID, Operation: j.Operation, Status: j.Status(), Created: j.Created}
		evs, _, _ := j.Events(0)
		for k := len(evs) - 1; k >= 0; k-- {
			ev := evs[k]
			if ev.Type == jobs.TypeProgress && js.Total == 0 {
				js.Done, js.Total = ev.Done, ev.Total
			}
			if (ev.Type == jobs.TypeNarration || ev.Type == jobs.TypeError) && js.Message == "" {
				js.Message = ev.Message
			}
		}
		s.Jobs = append(s.Jobs, js)
	}
	return s
}

// handleClusterEvents streams snapshots as SSE "state" events.
func (n *Node) handleClusterEvents(w http.ResponseWriter, r *http.Request) {
	p := auth.FromContext(r.Context())
	sw := sse.Start(w)
	tick := time.NewTicker(feedInterval)
	defer tick.Stop()
	var last []byte
	quiet := 0
	for {
		b, _ := json.Marshal(n.snapshotFor(p))
		if !bytes.Equal(b, last) {
			if err := sw.Data("state", b); err != nil {
				return
			}
			last, quiet = b, 0
		} else if quiet++; quiet >= int(sseKeepAlive/feedInterval) {
			if err := sw.KeepAlive(); err != nil {
				return
			}
			quiet = 0
		}
		select {
		case <-r.Context().Done():
			return
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (n *Node) handleClusterState(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, n.snapshotFor(auth.FromContext(r.Context())))
}
