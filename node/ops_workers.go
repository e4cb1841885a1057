package node

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/router"
)

// workerViews joins the registry with the gossip load reports.
func (n *Node) workerViews() []api.WorkerView {
	names := n.nodeNames()
	live := map[string]router.WorkerLoad{}
	for _, w := range n.loads.workers() {
		live[w.ID] = w
	}
	sched := map[string]bool{}
	for _, t := range n.router.Candidates(router.Filter{}) {
		sched[t.Registry.ID] = true
	}
	groups := map[string]*api.GroupView{}
	for _, g := range n.reg.Groups() {
		gv := n.groupView(g, names)
		for _, sh := range g.Shards {
			groups[sh.WorkerID] = &gv
		}
	}
	out := []api.WorkerView{}
	for _, rw := range n.reg.Workers() {
		v := api.WorkerView{ID: rw.ID, Node: names[rw.NodeID], NodeID: rw.NodeID, Model: rw.Model, Device: rw.Device,
			State: string(rw.State), Port: rw.Port, PID: rw.PID, LastHeartbeatAgeMs: -1, Schedulable: sched[rw.ID]}
		if w, ok := live[rw.ID]; ok {
			v.LiveState, v.InFlight, v.Queued, v.Slots, v.TokensPerSecond, v.LastHeartbeatAgeMs = w.State, w.InFlight, w.Queued, w.Slots, w.TPS, w.AgeMs
		}
		v.Group = groups[rw.ID]
		out = append(out, v)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

func validateWorkerID(req Request) error {
	r, err := decode[api.WorkerGetRequest](req)
	if err != nil {
		return err
	}
	if r.Worker() == "" {
		return jobs.Errorf(jobs.CodeBadRequest, "%s needs field \"worker_id\"", req.Operation)
	}
	return nil
}

func (n *Node) opWorkerList(ctx context.Context, em jobs.Emitter, req Request) error {
	res := api.WorkerListResult{Workers: n.workerViews()}
	names := n.nodeNames()
	for _, g := range n.reg.Groups() {
		res.Groups = append(res.Groups, n.groupView(g, names))
	}
	return em.Result(res)
}

// findWorker finds a worker by id; a group's id names its head.
func (n *Node) findWorker(id string) (api.WorkerView, error) {
	group, isGroup := n.reg.Group(id)
	if isGroup {
		id = group.Head().WorkerID
	}
	for _, v := range n.workerViews() {
		if v.ID == id {
			return v, nil
		}
	}
	if g := group; isGroup {
		// A group whose head is not registered (starting, or failed).
		gv := n.groupView(g, n.nodeNames())
		return api.WorkerView{ID: g.Head().WorkerID, NodeID: g.Head().NodeID, Model: g.Model, State: string(g.State),
			LastHeartbeatAgeMs: -1, Group: &gv}, nil
	}
	return api.WorkerView{}, jobs.Errorf(jobs.CodeNotFound, "no worker %q in the registry (see `rbee worker list`)", id)
}

func (n *Node) opWorkerGet(ctx context.Context, em jobs.Emitter, req Request) error {
	r, _ := decode[api.WorkerGetRequest](req)
	v, err := n.findWorker(r.Worker())
	if err != nil {
		return err
	}
	return em.Result(v)
}

// retireMissWait bounds how long a retire waits for a worker id its
// replica does not have: a few heartbeats, in which a committed
// registration reaches every follower.
const retireMissWait = 2 * time.Second

// opWorkerRetire marks a worker retiring in the registry (the write goes to
// the leader). Schedulers stop choosing it at once; its node drains it and
// stops it, and the leader then removes it.
func (n *Node) opWorkerRetire(ctx context.Context, em jobs.Emitter, req Request) error {
	r, _ := decode[api.WorkerGetRequest](req)
	// A worker registered a moment ago (a spawn through another node
	// answers once that node's replica has it) may not be in this replica
	// yet: give it the time a follower takes to apply a committed entry
	// before calling it unknown.
	known := func() bool {
		_, w := n.reg.Worker(r.Worker())
		_, g := n.reg.Group(r.Worker())
		return w || g
	}
	if !known() {
		n.waitReplicaFor(ctx, retireMissWait, known)
	}
	// A group (named by its id or any of its workers) retires whole.
	if g, ok := n.reg.Group(r.Worker()); ok {
		return n.retireGroup(ctx, em, g)
	}
	if g, ok := n.reg.GroupOf(r.Worker()); ok {
		return n.retireGroup(ctx, em, g)
	}
	v, err := n.findWorker(r.Worker())
	if err != nil {
		return err
	}
	if v.State == string(fsm.WorkerRetiring) {
		em.Narrate("queen", "retire", "worker %s is already retiring", v.ID)
		return em.Result(v)
	}
	cmd, err := fsm.Encode(fsm.SetWorkerState{ID: v.ID, State: fsm.WorkerRetiring, At: time.Now().UTC()})
	if err != nil {
		return err
	}
	if _, err := n.apply(ctx, cmd); err != nil {
		return writeFailed(err, "retire %s", v.ID)
	}
	// Read your writes: this node's replica (and so its scheduler) has the
	// change before the operation answers.
	n.waitReplica(ctx, func() bool {
		w, ok := n.reg.Worker(v.ID)
		return !ok || w.State != fsm.WorkerReady
	})
	em.Narrate("queen", "retire", "worker %s on %s is retiring: no new requests; %d in flight will finish, then %s stops it", v.ID, v.Node, v.InFlight, v.Node)
	v.State = string(fsm.WorkerRetiring)
	v.Schedulable = false
	return em.Result(v)
}

// retireRecheck: how often retireLocalWorkers looks at an unchanged
// registry.
const retireRecheck = 5 * time.Second

// retireLocalWorkers stops this node's workers that the registry marks
// retiring (once each). Called from the worker loop only.
func (n *Node) retireLocalWorkers() {
	// The worker loop calls this twice a second on every node; the
	// registry is looked at when it changed, or every retireRecheck (a
	// stop that failed is tried again).
	idx := n.reg.Index()
	if idx == n.retireSeen && time.Since(n.retireLooked) < retireRecheck {
		return
	}
	n.retireSeen, n.retireLooked = idx, time.Now()
	retiring := n.reg.State().WorkersWhere(func(w *fsm.Worker) bool {
		return w.NodeID == n.ID() && w.State == fsm.WorkerRetiring
	})
	for _, rw := range retiring {
		n.stopLocal(rw.ID, rw.PID, "retired")
	}
}

// stopLocal stops a local worker's process in the background, once per
// process: a stop under way is not started again, and a worker id spawned
// again after a stop is a new process, stopped in its turn. pid, when not
// 0, is the process the caller means (the registry's entry): another
// process under the same id is left alone. A worker id spawned again
// right after its retirement would otherwise be stopped, before it was
// ready, by the retiring entry of the process before it, which a replica
// still holds until the leader's removal reaches it.
func (n *Node) stopLocal(id string, pid int, why string) {
	st, err := n.procs.ByWorkerID(id)
	if err != nil {
		return // no process of ours runs it: nothing to stop
	}
	if pid != 0 && st.PID != pid {
		return // another incarnation of the id
	}
	key := fmt.Sprintf("%s@%d", id, st.PID)
	n.retireMu.Lock()
	started := n.retiring[key]
	if !started {
		n.retiring[key] = true
	}
	n.retireMu.Unlock()
	if started {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer func() {
			n.retireMu.Lock()
			delete(n.retiring, key)
			n.retireMu.Unlock()
		}()
		if why == "retired" {
			n.retired.Add(st.PID)
		}
		if err := n.stopWorker(n.ctx, id); err != nil {
			n.log.Warn("stop worker", "worker", id, "why", why, "err", err)
			return
		}
		n.log.Info("worker stopped", "worker", id, "why", why)
	}()
}

// retiredMemory is how long the node remembers a process it stopped for
// a retire: far longer than a spawn's wait for its registry entry.
const retiredMemory = 10 * time.Minute

// errNotManaged: the worker was not started by this node, so rbee will not
// signal it.
var errNotManaged = fmt.Errorf("worker was not started by this node; stop it yourself")
