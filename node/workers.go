package node

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/gossip"
	"github.com/rbee-project/rbee/internal/loopback"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/router"
	"github.com/rbee-project/rbee/worker"
	"github.com/rbee-project/rbee/worker/process"
)

// Timings of the worker bookkeeping.
const (
	// loadPublishEvery re-broadcasts this node's report even when nothing
	// changed, so a peer that missed a broadcast catches up within seconds
	// (push/pull anti-entropy is the slower safety net).
	loadPublishEvery = 3 * time.Second
	// workerTick drives heartbeat expiry and the leader's reconcile.
	workerTick = 500 * time.Millisecond
	// maxHeartbeatBytes bounds a heartbeat body (a few hundred bytes).
	maxHeartbeatBytes = 64 << 10
	// refusedLogEvery: a refused heartbeat is logged at warn at most this
	// often (a stranger's worker beats every 2 s until its grace ends).
	refusedLogEvery = time.Minute
)

// localWorker is a worker process on this node, known from its heartbeats.
type localWorker struct {
	hb   worker.Heartbeat
	last time.Time
}

// localWorkers is this node's view of its own workers.
type localWorkers struct {
	mu        sync.Mutex
	m         map[string]*localWorker
	refusedAt time.Time // last refused heartbeat logged at warn
}

// handleHeartbeat receives a worker's heartbeat. Only processes on this
// machine may report, and only workers this node's process manager started
// (or re-adopted from this data dir): the heartbeat carries the worker's
// own secret (Authorization: Bearer), handed at spawn, on the port it was
// given. Anything else is a 401 and changes nothing. The API's client
// authentication does not cover this route: workers hold no client token,
// their secret is the credential.
func (n *Node) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	if !loopback.Request(r) {
		writeError(w, http.StatusForbidden, jobs.CodeForbidden, "heartbeats are accepted from this machine only")
		return
	}
	var hb worker.Heartbeat
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxHeartbeatBytes)).Decode(&hb); err != nil {
		writeError(w, http.StatusBadRequest, jobs.CodeBadRequest, "bad heartbeat: "+err.Error())
		return
	}
	if hb.ID == "" || len(hb.ID) > 128 || hb.Port <= 0 || hb.Port > 65535 {
		writeError(w, http.StatusBadRequest, jobs.CodeBadRequest, "heartbeat needs an id and a port")
		return
	}
	if !n.workerAuthentic(hb, r) {
		n.logRefused(hb)
		w.Header().Set("WWW-Authenticate", `Bearer realm="rbee-worker"`)
		writeError(w, http.StatusUnauthorized, jobs.CodeForbidden,
			"unknown worker or wrong worker secret: this node accepts heartbeats only from workers it started")
		return
	}
	n.heartbeat(hb)
	w.WriteHeader(http.StatusNoContent)
}

// workerAuthentic reports whether a heartbeat comes from a worker this
// node supervises: its secret (compared in constant time) and the port the
// process manager gave it. The port check keeps the node from ever sending
// a worker's secret to another port.
func (n *Node) workerAuthentic(hb worker.Heartbeat, r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" || n.procs == nil {
		return false
	}
	// Worker ids are no secret (`worker list` shows them): an unknown one
	// may answer sooner.
	secret, port, known := n.procs.Secret(hb.ID)
	if !known {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(tok), []byte(secret)) == 1 && port == hb.Port
}

// logRefused logs a refused heartbeat: at warn once per refusedLogEvery,
// else at debug.
func (n *Node) logRefused(hb worker.Heartbeat) {
	n.local.mu.Lock()
	loud := time.Since(n.local.refusedAt) >= refusedLogEvery
	if loud {
		n.local.refusedAt = time.Now()
	}
	n.local.mu.Unlock()
	lvl := slog.LevelDebug
	if loud {
		lvl = slog.LevelWarn
	}
	n.log.Log(n.ctx, lvl, "refused a heartbeat: not a worker this node started, or the wrong secret (a worker of another node, or of this node's data dir before it was replaced?)",
		"worker", hb.ID, "port", hb.Port, "pid", hb.PID)
}

// heartbeat records a heartbeat and publishes at once when the worker is
// new, changed state or stopped.
func (n *Node) heartbeat(hb worker.Heartbeat) {
	n.local.mu.Lock()
	old, ok := n.local.m[hb.ID]
	changed := !ok || old.hb.State != hb.State
	if hb.State == worker.StateStopped || hb.State == worker.StateFailed {
		// A worker that stopped (not one that failed to load: its process
		// may never have been announced) whose process is still exiting.
		if _, running := n.procInfo(hb.ID); running && hb.State == worker.StateStopped {
			// Its process is still exiting (and holds its model): it
			// stays listed, not routable, until the process exit
			// (workerGone), so the registry drops it only then.
			n.local.m[hb.ID] = &localWorker{hb: hb, last: time.Now()}
		} else {
			delete(n.local.m, hb.ID)
			changed = ok
		}
	} else {
		n.local.m[hb.ID] = &localWorker{hb: hb, last: time.Now()}
	}
	n.local.mu.Unlock()
	if changed {
		n.log.Info("worker state", "worker", hb.ID, "state", hb.State, "model", hb.Model, "port", hb.Port)
		n.publishLoad()
	}
}

// workerGone drops a local worker at once (its process exited).
func (n *Node) workerGone(id string) {
	n.local.mu.Lock()
	_, ok := n.local.m[id]
	delete(n.local.m, id)
	n.local.mu.Unlock()
	if ok {
		n.log.Info("worker gone", "worker", id)
		n.publishLoad()
	}
}

// localHeartbeat returns the last heartbeat of a local worker.
func (n *Node) localHeartbeat(id string) (worker.Heartbeat, bool) {
	n.local.mu.Lock()
	defer n.local.mu.Unlock()
	lw, ok := n.local.m[id]
	if !ok {
		return worker.Heartbeat{}, false
	}
	return lw.hb, true
}

// publishLoad broadcasts this node's report of its workers.
func (n *Node) publishLoad() {
	select {
	case <-n.adopted:
	default:
		return // the worker loop publishes once adoption is done
	}
	now := time.Now()
	r := loadReport{NodeID: n.ID(), Seq: now.UnixNano()}
	n.local.mu.Lock()
	for _, lw := range n.local.m {
		hb := lw.hb
		r.Workers = append(r.Workers, router.WorkerLoad{ID: hb.ID, NodeID: n.ID(), Model: hb.Model, Device: hb.Device,
			Port: hb.Port, PID: hb.PID, State: string(hb.State), InFlight: hb.InFlight, Queued: hb.Queued,
			Slots: hb.Slots, TPS: hb.TokensPerSecond, ContextLength: hb.ContextLength, AgeMs: now.Sub(lw.last).Milliseconds()})
	}
	n.local.mu.Unlock()
	sort.Slice(r.Workers, func(a, b int) bool { return r.Workers[a].ID < r.Workers[b].ID })
	r.KeysUsed = n.auth.KeysUsed()
	n.loads.put(r)
	b, err := encodeLoadMsg(r)
	if err != nil {
		// Peers still get it by push/pull.
		n.log.Debug("broadcast load", "err", err)
		return
	}
	if err := n.gsp.Broadcast("load/"+n.ID(), b); err != nil {
		n.log.Warn("broadcast load", "err", err)
	}
}

// workerLoop expires silent workers, republishes the load report and, on
// the leader, turns worker state changes into registry writes.
func (n *Node) workerLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(workerTick)
	defer tick.Stop()
	lastPublish := time.Time{}
	// An empty first report would tell every peer that this node's
	// re-adopted workers are gone (and the leader would drop them).
	select {
	case <-n.ctx.Done():
		return
	case <-n.adopted:
	}
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.reconcileKick:
		case <-tick.C:
		}
		expired := false
		n.local.mu.Lock()
		for id, lw := range n.local.m {
			if time.Since(lw.last) > n.cfg.WorkerHeartbeatTimeout {
				if lw.hb.State != worker.StateStopped && lw.hb.State != worker.StateFailed {
					n.log.Warn("worker heartbeats stopped", "worker", id, "silent_for", time.Since(lw.last).Round(time.Millisecond))
				}
				delete(n.local.m, id)
				expired = true
			}
		}
		n.local.mu.Unlock()
		if expired || time.Since(lastPublish) > loadPublishEvery {
			n.publishLoad()
			lastPublish = time.Now()
		}
		if n.IsLeader() {
			n.reconcileWorkers()
			n.raiseRegistryVersion()
		}
		n.retireLocalWorkers()
	}
}

// kickReconcile asks the worker loop for a pass now (non-blocking).
func (n *Node) kickReconcile() {
	select {
	case n.reconcileKick <- struct{}{}:
	default:
	}
}

// registryState maps a worker's reported state to its registry state.
func registryState(s string) fsm.WorkerState {
	switch s {
	case string(worker.StateReady), string(worker.StateBusy):
		return fsm.WorkerReady
	case string(worker.StateDraining):
		return fsm.WorkerRetiring
	}
	return fsm.WorkerRegistered
}

// reconcileWorkers (leader only) writes the differences between what the
// nodes report and what the registry holds. Heartbeats never reach Raft:
// only a new worker, a state change or a worker that is gone does.
func (n *Node) reconcileWorkers() {
	members := map[string]gossip.State{}
	for _, m := range n.gsp.Members() {
		members[m.ID] = m.State
	}
	reported := map[string]router.WorkerLoad{}
	hasReport := map[string]bool{}
	for id, st := range members {
		if st != gossip.StateAlive && st != gossip.StateSuspect {
			continue
		}
		r, ok := n.loads.report(id)
		if !ok {
			continue
		}
		hasReport[id] = true
		for _, w := range r.Workers {
			w.NodeID = id
			reported[w.ID] = w
		}
	}
	var cmds []fsm.Command
	now := time.Now().UTC()
	registry := map[string]fsm.Worker{}
	for _, w := range n.reg.Workers() {
		registry[w.ID] = w
	}
	ids := make([]string, 0, len(reported))
	for id := range reported {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		w := reported[id]
		want := registryState(w.State)
		rw, ok := registry[id]
		switch {
		case !ok:
			cmds = append(cmds, fsm.UpsertWorker{Worker: fsm.Worker{ID: w.ID, NodeID: w.NodeID, Model: w.Model, Device: w.Device,
				Port: w.Port, PID: w.PID, State: want, RegisteredAt: now, UpdatedAt: now}})
		case rw.State == fsm.WorkerRetiring || rw.State == fsm.WorkerGone:
			// Retiring is decided by the registry, not by the worker.
		case rw.State != want:
			cmds = append(cmds, fsm.SetWorkerState{ID: id, State: want, At: now})
		}
	}
	for id, rw := range registry {
		if _, ok := reported[id]; ok {
			continue
		}
		st, known := members[rw.NodeID]
		nodeDown := !known || st == gossip.StateDead || st == gossip.StateLeft
		if nodeDown || hasReport[rw.NodeID] {
			cmds = append(cmds, fsm.DeleteWorker{ID: id})
		}
	}
	for _, c := range cmds {
		b, err := fsm.Encode(c)
		if err != nil {
			n.log.Error("encode worker command", "err", err)
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
		_, err = n.apply(ctx, b)
		cancel()
		if err != nil {
			n.log.Debug("worker reconcile write", "cmd", fmt.Sprintf("%T", c), "err", err)
			return
		}
	}
}

// procInfo is the record of a worker process this node supervises; ok is
// false once it exited (or for a worker this node did not start).
func (n *Node) procInfo(workerID string) (process.WorkerInfo, bool) {
	if n.procs == nil {
		return process.WorkerInfo{}, false
	}
	return n.procs.Info(workerID)
}
