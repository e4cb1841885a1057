package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/internal/humanize"
	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/placement"
	"github.com/rbee-project/rbee/node/shardlink"
	"github.com/rbee-project/rbee/worker"
)

// Sharded worker groups (see node/DESIGN.md, "Sharded groups"): one model
// served by cpu workers on several hives. The group's head hive places it:
// it resolves the model, splits its layers (pipeline) or KV heads (tensor)
// by the hives' free RAM, records the group (starting), spawns the other
// shards on their hives (forwarded worker_spawn jobs with a Shard part),
// then its own head worker with the others as stages, bridged by
// shardlink, and records the group ready. Requests reach the head like
// any worker; the other shards are never scheduled.

// groupReplanTimeout bounds one re-plan of a failed group (the model may
// have to be copied to a new hive).
const groupReplanTimeout = 10 * time.Minute

// groupReplanRetry: a re-plan that failed (no memory, a hive went away
// meanwhile) is tried again after this long, doubled after each failure
// up to groupReplanRetryMax.
const (
	groupReplanRetry    = 10 * time.Second
	groupReplanRetryMax = 10 * time.Minute
)

// orphanShardGrace: a shard worker of this node that no group lists (its
// group was re-planned without it, or deleted, while its node was away) is
// stopped once this node has seen it so, with a current registry replica,
// for this long. A placement records its group before it spawns the
// shards, so only a lagging replica (a node that just restarted) sees a
// legitimate shard unlisted, for a few seconds.
const orphanShardGrace = 15 * time.Second

// groupWriteTimeout bounds a placement's last registry write, which must
// not fail because the job that placed the group was cancelled.
const groupWriteTimeout = 15 * time.Second

// maxGroupError bounds the error a group entry carries (the registry
// replicates it to every node; a cause from a hive can be long).
const maxGroupError = 1000

// groupStartLimit: a group still starting after this long lost the node
// that was placing it (a placement copies the model to the shards' hives
// and loads it: minutes for a large model, never this long), so the
// leader fails it and re-plans it. The leader counts it on its own clock
// from when it first saw the placement starting (groupState.startingFor),
// not from the entry's UpdatedAt: that is the placing node's wall clock,
// and a leader whose clock runs ahead of it by the limit (machines of a
// LAN without NTP), or jumps ahead, failed every placement at once. A new
// leader starts the count afresh.
const groupStartLimit = 30 * time.Minute

// groupState tracks the leader's re-plans of failed groups and this
// node's orphaned shard workers.
type groupState struct {
	mu sync.Mutex
	// replans cancel the re-plans this node runs as the leader.
	replans map[string]context.CancelFunc
	// nextTry and fails pace a group's re-plans (exponential backoff).
	nextTry map[string]time.Time
	fails   map[string]int
	// orphanSince: since when a local shard worker has been seen listed
	// by no group.
	orphanSince map[string]time.Time
	// starting: since when (this node's clock) the leader has seen a
	// group starting, by group id, with the placement it saw.
	starting map[string]startSeen
}

type startSeen struct {
	placement string
	since     time.Time
}

func newGroupState() groupState {
	return groupState{replans: map[string]context.CancelFunc{}, nextTry: map[string]time.Time{}, fails: map[string]int{},
		orphanSince: map[string]time.Time{}, starting: map[string]startSeen{}}
}

// startingFor returns how long, by now on this node's clock, g has been
// seen starting with its current placement (0 at the first sight, or
// after a new placement of the same id).
func (s *groupState) startingFor(g fsm.Group, now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen, ok := s.starting[g.ID]
	if !ok || seen.placement != g.Placement {
		seen = startSeen{placement: g.Placement, since: now}
		s.starting[g.ID] = seen
	}
	return now.Sub(seen.since)
}

// forgetStarting drops the start times of groups that are not starting
// (gone, ready, failed) in byID.
func (s *groupState) forgetStarting(byID map[string]fsm.Group) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.starting {
		if g, ok := byID[id]; !ok || g.State != fsm.GroupStarting {
			delete(s.starting, id)
		}
	}
}

// replanDelay is the wait before the next re-plan after fails failures.
func replanDelay(fails int) time.Duration {
	d := groupReplanRetry
	for i := 0; i < fails && d < groupReplanRetryMax; i++ {
		d *= 2
	}
	return min(d, groupReplanRetryMax)
}

func newID(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// checkGroupSpawn checks the group fields of a worker_spawn request.
func checkGroupSpawn(r api.WorkerSpawnRequest) error {
	if r.Shards < 0 || r.Shards > fsm.MaxGroupShards || len(r.Hives) > fsm.MaxGroupShards {
		return jobs.Errorf(jobs.CodeBadRequest, "shards must be 0..%d", fsm.MaxGroupShards)
	}
	if r.Shard == nil && r.Shards == 1 {
		// 0 is the field left out (a client's zero value): one worker.
		return jobs.Errorf(jobs.CodeBadRequest, "shards 1: a group has 2 or more shards (leave shards out for one worker)")
	}
	if r.Mode != "" && r.Mode != fsm.GroupPipeline && r.Mode != fsm.GroupTensor {
		return jobs.Errorf(jobs.CodeBadRequest, "mode %q (want pipeline or tensor)", r.Mode)
	}
	if len(r.Hives) > 0 && r.Shards > 0 && len(r.Hives) != r.Shards {
		return jobs.Errorf(jobs.CodeBadRequest, "%d hives for %d shards: name one hive per shard (the first is the head)", len(r.Hives), r.Shards)
	}
	if r.Shard == nil && len(r.Hives) == 1 {
		return jobs.Errorf(jobs.CodeBadRequest, "hives names a group's hives, at least 2 (use hive for a single worker)")
	}
	if r.Hive != "" && len(r.Hives) > 0 && r.Hive != r.Hives[0] {
		return jobs.Errorf(jobs.CodeBadRequest, "hive %q is not the group's head %q: the first of hives is the head (leave hive out)", r.Hive, r.Hives[0])
	}
	if r.Shard == nil && (r.Shards > 1 || len(r.Hives) > 1) && r.WorkerID != "" {
		// A group's workers get ids of its own placement (a re-plan
		// gives new ones): one id would name one shard, silently.
		return jobs.Errorf(jobs.CodeBadRequest, "worker_id %q names one worker; a group's shards get ids of their own (leave worker_id out, and retire or get the group by its id)", r.WorkerID)
	}
	if (r.Shards > 1 || len(r.Hives) > 1) && r.Type != "" && r.Type != "cpu" {
		return jobs.Errorf(jobs.CodeBadRequest, "only the cpu worker runs sharded groups (not %q)", r.Type)
	}
	if s := r.Shard; s != nil {
		if s.Mode != fsm.GroupPipeline && s.Mode != fsm.GroupTensor || s.Lo < 0 || s.Hi <= s.Lo || len(s.Stages) > fsm.MaxGroupShards {
			return jobs.Errorf(jobs.CodeBadRequest, "bad shard: mode %q, range [%d, %d)", s.Mode, s.Lo, s.Hi)
		}
		if s.Group == "" || len(s.Group) > 128 {
			return jobs.Errorf(jobs.CodeBadRequest, "bad shard: group %q", s.Group)
		}
		if (s.Lo == 0) != (len(s.Stages) > 0) {
			return jobs.Errorf(jobs.CodeBadRequest, "a group's head (lo 0) and only it has stages")
		}
	}
	return nil
}

// refuseInternalSpawnFields refuses a user's worker_spawn that sets the
// fields only nodes set: shard (the part a placement gives each worker)
// and group (the failed group the leader re-plans).
func refuseInternalSpawnFields(req Request) error {
	if req.Operation != api.OpWorkerSpawn {
		return nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(req.Raw, &fields); err != nil {
		return jobs.Errorf(jobs.CodeBadRequest, "%s: %v", req.Operation, err)
	}
	for f := range fields {
		// Any case: Go's JSON decoding matches names without it.
		for _, k := range []string{"shard", "group"} {
			if strings.EqualFold(f, k) {
				return jobs.Errorf(jobs.CodeBadRequest, "%s: field %q is set by the nodes that place a group, not by a request", req.Operation, f)
			}
		}
	}
	return nil
}

// shardArgs are the worker's command line and environment for one shard.
func (n *Node) shardArgs(s *api.ShardSpawn) (args, env []string, err error) {
	rng := strconv.Itoa(s.Lo) + ":" + strconv.Itoa(s.Hi)
	if s.Mode == fsm.GroupTensor {
		args = []string{"--shard-kv-heads", rng}
	} else {
		args = []string{"--shard-layers", rng}
	}
	if n.cfg.StageDirect && s.Lo > 0 {
		// Not the head: its head may connect straight to it.
		host, _, err := net.SplitHostPort(n.cfg.P2PAddr)
		if err != nil {
			return nil, nil, fmt.Errorf("p2p address %q: %w", n.cfg.P2PAddr, err)
		}
		env = append(env, worker.StageListenEnv+"="+net.JoinHostPort(host, "0"))
	}
	var secrets []string
	for _, st := range s.Stages {
		u, tok, err := n.links.Add(s.Group, st.NodeID, st.WorkerID)
		if err != nil {
			n.links.Remove(s.Group)
			return nil, nil, err
		}
		args = append(args, "--stage", u)
		secrets = append(secrets, tok)
	}
	if len(secrets) > 0 {
		env = append(env, worker.StageSecretsEnv+"="+strings.Join(secrets, ","))
	}
	return args, env, nil
}

// opGroupSpawn places and starts a sharded group (worker_spawn with
// shards or hives). It runs on the head hive; elsewhere it forwards there.
func (n *Node) opGroupSpawn(ctx context.Context, em jobs.Emitter, req Request, r api.WorkerSpawnRequest) error {
	mode := r.Mode
	if mode == "" {
		mode = fsm.GroupPipeline
	}
	hives := r.Hives
	if len(hives) == 0 {
		picked := placement.HivesByRAM(n.reg.Nodes(), n.aliveIDs())
		if len(picked) < r.Shards {
			return jobs.Errorf(jobs.CodeUnavailable, "%d shards need %d hives; %d are alive", r.Shards, r.Shards, len(picked))
		}
		if pathRef(r.ModelRef()) {
			// A path names a file of this node: it heads the group
			// (the others copy the file from the head).
			picked, _ = hereFirst(picked, n.ID())
		}
		for _, h := range picked[:r.Shards] {
			hives = append(hives, h.Name)
		}
	}
	if len(hives) < 2 {
		return jobs.Errorf(jobs.CodeBadRequest, "a group needs at least 2 shards")
	}
	// The hives are checked before the model is resolved (which may
	// download it).
	targets := make([]api.Hive, len(hives))
	names := make([]string, len(hives))
	named := make(map[string]string, len(hives)) // node id -> how the request named it
	for i, h := range hives {
		t, err := n.resolveHive(h)
		if err != nil {
			return err
		}
		if t.ID == "" || t.State != "alive" && t.State != "suspect" {
			return jobs.Errorf(jobs.CodeBadRequest, "hive %s is %s: a group's shards run on alive hives", t.Name, t.State)
		}
		// One shard per hive: each part is sized to its hive's free RAM,
		// so two parts on one hive would each count all of it (by name or
		// by id, the same node).
		if first, dup := named[t.ID]; dup {
			return jobs.Errorf(jobs.CodeBadRequest, "hive %s is named twice (%q and %q): a group has one shard per hive, each sized to that hive's free RAM", t.Name, first, h)
		}
		named[t.ID] = h
		targets[i], names[i] = t, t.Name
	}
	if targets[0].ID != n.ID() {
		// The head's hive places the group.
		return n.forwardPlaced(ctx, em, req, targets[0], map[string]any{"hives": names, "shards": len(hives)})
	}
	ref := r.ModelRef()
	model, err := n.hive.ResolveModel(ctx, em, ref)
	if err != nil {
		return err
	}
	dims, err := placement.ModelDims(model)
	if err != nil {
		return jobs.Errorf(jobs.CodeBadRequest, "split %s: %v", model.ID, err)
	}
	units, what := dims.Layers, "layers"
	if mode == fsm.GroupTensor {
		if dims.Experts > 0 {
			return jobs.Errorf(jobs.CodeBadRequest, "%s is a mixture of %d experts: it splits by layers (--mode pipeline), not by KV heads", model.ID, dims.Experts)
		}
		units, what = dims.KVHeads, "KV heads"
	}
	weights := make([]uint64, len(targets))
	for i, t := range targets {
		if rn, ok := n.reg.Node(t.ID); ok && rn.Capabilities != nil {
			weights[i] = rn.Capabilities.RAMFree
		}
	}
	parts, err := placement.Split(units, weights)
	if err != nil {
		return jobs.Errorf(jobs.CodeBadRequest, "%s has %d %s: %v", model.ID, units, what, err)
	}
	// Each part must fit its hive's free RAM (under its --memory-limit),
	// as a whole worker must: a shard's own spawn is not refused for it
	// (its part was sized here), so this is where a group that does not
	// fit is refused, before anything is written or started.
	est := cpuEstimate(model, r.Ctx, r.Slots, r.KVCache)
	var short []string
	for i, t := range targets {
		k := parts[i][1] - parts[i][0]
		if need := est.Part(k, units); weights[i] > 0 && need > weights[i] {
			short = append(short, fmt.Sprintf("%s needs %s for %d of %d %s and has %s free", t.Name, humanize.Bytes(need), k, units, what, humanize.Bytes(weights[i])))
		}
	}
	if len(short) > 0 {
		return jobs.Errorf(jobs.CodeUnavailable, "%s split %s over %s does not fit: %s (free RAM as the hives last reported it, under their --memory-limit)",
			model.ID, mode, strings.Join(names, ", "), strings.Join(short, "; "))
	}
	// The entry is written starting only if it is absent (a new group)
	// or, for a re-plan, still the failed entry the leader re-plans: a
	// group retired or re-planned meanwhile is left alone. The placement's
	// token makes its ready write fail if the group was placed again.
	gid := r.Group // a re-plan keeps the group's id
	expect := &fsm.GroupExpect{Absent: true}
	g := fsm.Group{ID: gid, Model: model.ID, Mode: mode, State: fsm.GroupStarting, Placement: newID("p-"),
		Threads: r.Threads, Slots: r.Slots, Ctx: r.Ctx, KVCache: r.KVCache, Version: r.Version, UpdatedAt: time.Now().UTC()}
	if gid == "" {
		g.ID = newID("g-")
		gid = g.ID
	} else {
		// The leader wrote it failed a moment ago: this replica may
		// not have it yet.
		n.waitReplica(ctx, func() bool { old, ok := n.reg.Group(gid); return ok && old.State == fsm.GroupFailed })
		old, ok := n.reg.Group(gid)
		if !ok || old.State != fsm.GroupFailed {
			return jobs.Errorf(jobs.CodeConflict, "group %s is not failed: nothing to re-plan", gid)
		}
		g.CreatedAt = old.CreatedAt
		expect = &fsm.GroupExpect{State: fsm.GroupFailed, Placement: old.Placement}
	}
	for i, t := range targets {
		g.Shards = append(g.Shards, fsm.GroupShard{NodeID: t.ID, WorkerID: newID("w-"), Lo: parts[i][0], Hi: parts[i][1]})
	}
	shardRef := ref
	if localRef(ref) {
		// A path is this hive's: the others copy the file by its id,
		// from the holding this hive records in the registry. It is
		// awaited before the group is written, so that a shard's node,
		// which waits for its replica to list the group before it
		// resolves the model, lists the holding too (the log's order).
		shardRef = model.ID
		n.waitReplica(ctx, func() bool { return n.holds(n.ID(), model.ID) })
	}
	if err := n.writeGroup(ctx, g, expect); err != nil {
		return err
	}
	var split []string
	for i, s := range g.Shards {
		split = append(split, fmt.Sprintf("%s [%d, %d)", targets[i].Name, s.Lo, s.Hi))
	}
	em.Narrate("queen", "group", "group %s: %s of %s over %d hives, %s: %s", gid, mode, model.ID, len(targets), what, strings.Join(split, ", "))

	// The others' shards first: the head connects to them when it loads.
	base := api.WorkerSpawnRequest{Model: shardRef, Threads: r.Threads, Slots: r.Slots, Ctx: r.Ctx, KVCache: r.KVCache, Version: r.Version}
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i := 1; i < len(targets); i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sr := base
			sr.Hive, sr.WorkerID = targets[i].Name, g.Shards[i].WorkerID
			sr.Shard = &api.ShardSpawn{Group: gid, Mode: mode, Lo: g.Shards[i].Lo, Hi: g.Shards[i].Hi}
			errs[i] = n.spawnOn(ctx, em, targets[i], sr)
		}(i)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		n.abandonGroup(g, r.Group != "", err)
		return jobs.Errorf(jobs.CodeUnavailable, "group %s: a shard did not start: %v", gid, err)
	}
	n.waitReplica(ctx, func() bool { cur, ok := n.reg.Group(gid); return ok && cur.Placement == g.Placement })
	if cur, ok := n.reg.Group(gid); !ok || cur.Placement != g.Placement || cur.State != fsm.GroupStarting {
		// Retired (or placed again) while its shards started: the head
		// is not started; the shards stop.
		n.abandonGroup(g, r.Group != "", errors.New("the group changed while it started"))
		return jobs.Errorf(jobs.CodeConflict, "group %s was retired or placed again while it started", gid)
	}
	head := base
	head.Model = ref
	head.WorkerID = g.Shards[0].WorkerID
	head.Shard = &api.ShardSpawn{Group: gid, Mode: mode, Lo: g.Shards[0].Lo, Hi: g.Shards[0].Hi}
	for _, s := range g.Shards[1:] {
		head.Shard.Stages = append(head.Shard.Stages, api.ShardStage{NodeID: s.NodeID, WorkerID: s.WorkerID})
	}
	if err := n.spawnOn(ctx, em, targets[0], head); err != nil {
		n.abandonGroup(g, r.Group != "", err)
		return jobs.Errorf(jobs.CodeUnavailable, "group %s: the head did not start: %v", gid, err)
	}
	// The ready write expects this placement's starting entry: a retire
	// or another placement meanwhile wins, and this one stops what it
	// started. It is not the job's to cancel: a placement whose head runs
	// ends with the entry written or abandoned.
	starting := g.Clone()
	g.State, g.Error, g.UpdatedAt = fsm.GroupReady, "", time.Now().UTC()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), groupWriteTimeout)
	err = n.writeGroup(wctx, g, &fsm.GroupExpect{State: fsm.GroupStarting, Placement: g.Placement})
	cancel()
	if err != nil {
		n.abandonGroup(starting, r.Group != "", err)
		return err
	}
	n.waitReplica(ctx, func() bool { gg, ok := n.reg.Group(gid); return ok && gg.State == fsm.GroupReady })
	em.Narrate("queen", "group", "group %s is ready: requests for %s go to its head %s on %s", gid, model.ID, g.Shards[0].WorkerID, targets[0].Name)
	return em.Result(api.GroupSpawnResult{Group: n.groupView(g, n.nodeNames()), WorkerID: g.Shards[0].WorkerID, Model: model.ID, State: string(g.State)})
}

// holds reports whether the registry records model on node.
func (n *Node) holds(nodeID, model string) bool {
	for _, h := range n.reg.Models() {
		if h.NodeID == nodeID && h.ModelID == model {
			return true
		}
	}
	return false
}

// spawnOn runs a worker_spawn on a hive (this one or another, forwarded)
// and passes on its narration; its result and error are this job's to
// report.
func (n *Node) spawnOn(ctx context.Context, em jobs.Emitter, target api.Hive, r api.WorkerSpawnRequest) error {
	req, err := spawnRequest(target.Name, r)
	if err != nil {
		return err
	}
	sub := &subEmitter{em: em}
	if target.ID == n.ID() {
		err = n.opWorkerSpawn(ctx, sub, req)
	} else {
		err = n.forwardJob(ctx, target, req, sub)
	}
	if errors.Is(err, jobs.ErrReported) && sub.err != "" {
		return fmt.Errorf("%s: %s", target.Name, sub.err)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", target.Name, err)
	}
	return nil
}

// spawnRequest is r as a worker_spawn job for hive.
func spawnRequest(hive string, r api.WorkerSpawnRequest) (Request, error) {
	raw, err := json.Marshal(struct {
		Operation string `json:"operation"`
		api.WorkerSpawnRequest
	}{api.OpWorkerSpawn, r})
	if err != nil {
		return Request{}, err
	}
	return Request{Operation: api.OpWorkerSpawn, Hive: hive, Raw: raw}, nil
}

// subEmitter passes a sub-job's narration and progress on and keeps its
// result and error to itself.
type subEmitter struct {
	em  jobs.Emitter
	mu  sync.Mutex
	err string
}

func (s *subEmitter) Emit(ev jobs.Event) {
	switch ev.Type {
	case jobs.TypeResult:
	case jobs.TypeError:
		s.mu.Lock()
		s.err = ev.Message
		s.mu.Unlock()
	default:
		s.em.Emit(ev)
	}
}

func (s *subEmitter) Narrate(actor, action, format string, args ...any) {
	s.em.Narrate(actor, action, format, args...)
}

func (s *subEmitter) Progress(done, total int64, unit string) { s.em.Progress(done, total, unit) }
func (s *subEmitter) Result(any) error                        { return nil }

// writeGroup writes a group entry through the leader, expecting the
// stored entry to match expect (nil: unconditional). A mismatch is a
// conflict job error.
func (n *Node) writeGroup(ctx context.Context, g fsm.Group, expect *fsm.GroupExpect) error {
	cmd, err := fsm.Encode(fsm.UpsertGroup{Group: g, Expect: expect})
	if err != nil {
		return jobs.Errorf(jobs.CodeInternal, "group %s: %v", g.ID, err)
	}
	if _, err := n.apply(ctx, cmd); err != nil {
		return writeFailed(err, "record group %s", g.ID)
	}
	return nil
}

// abandonGroup ends a group whose placement (g, as it wrote it starting)
// failed: the shards it started retire and the entry goes, or, for a
// re-plan, goes back to failed (the leader tries again). Both writes
// expect the placement's own starting entry: a group retired or placed
// again meanwhile is not touched.
func (n *Node) abandonGroup(g fsm.Group, replan bool, cause error) {
	ctx, cancel := context.WithTimeout(n.ctx, groupWriteTimeout)
	defer cancel()
	n.log.Warn("group placement failed", "group", g.ID, "err", cause)
	n.links.Remove(g.ID)
	n.retireShards(ctx, g)
	mine := &fsm.GroupExpect{State: fsm.GroupStarting, Placement: g.Placement}
	if replan {
		g.State, g.Error, g.UpdatedAt = fsm.GroupFailed, "re-plan failed: "+cause.Error(), time.Now().UTC()
		if len(g.Error) > maxGroupError {
			g.Error = g.Error[:maxGroupError]
		}
		n.applyQuiet(fsm.UpsertGroup{Group: g, Expect: mine})
		return
	}
	n.applyQuiet(fsm.DeleteGroup{ID: g.ID, Expect: mine})
}

// retireShards marks every registered, not yet retiring worker of g
// retiring: their nodes drain and stop them.
func (n *Node) retireShards(ctx context.Context, g fsm.Group) {
	for _, s := range g.Shards {
		w, ok := n.reg.Worker(s.WorkerID)
		if !ok || w.State == fsm.WorkerRetiring || w.State == fsm.WorkerGone {
			continue
		}
		cmd, err := fsm.Encode(fsm.SetWorkerState{ID: s.WorkerID, State: fsm.WorkerRetiring, At: time.Now().UTC()})
		if err != nil {
			continue
		}
		if _, err := n.apply(ctx, cmd); err != nil {
			n.log.Debug("retire shard", "group", g.ID, "worker", s.WorkerID, "err", err)
		}
	}
}

// retireGroup retires a whole group: the entry goes to retiring, every
// shard drains (the head finishes its requests; the others serve it until
// it hangs up), and the leader deletes the entry once they are gone.
func (n *Node) retireGroup(ctx context.Context, em jobs.Emitter, g fsm.Group) error {
	if g.State != fsm.GroupRetiring {
		// A user's retire wins over whatever the group was doing: no
		// expectation; a placement still running fails its own writes.
		g.State, g.UpdatedAt = fsm.GroupRetiring, time.Now().UTC()
		if err := n.writeGroup(ctx, g, nil); err != nil {
			return err
		}
	}
	n.retireShards(ctx, g)
	n.waitReplica(ctx, func() bool {
		w, ok := n.reg.Worker(g.Head().WorkerID)
		return !ok || w.State != fsm.WorkerReady
	})
	em.Narrate("queen", "retire", "group %s (%d shards) is retiring: no new requests; in-flight ones finish, then its hives stop the shards", g.ID, len(g.Shards))
	return em.Result(n.groupView(g, n.nodeNames()))
}

// aliveIDs are the nodes gossip sees alive.
func (n *Node) aliveIDs() map[string]bool {
	out := map[string]bool{}
	for id := range (routerView{n}).AliveNodes() {
		out[id] = true
	}
	return out
}

// nodeNames maps node ids to names (gossip, else the registry).
func (n *Node) nodeNames() map[string]string {
	names := map[string]string{}
	for _, m := range n.gsp.Members() {
		names[m.ID] = m.Meta.Name
	}
	for _, rn := range n.reg.Nodes() {
		if names[rn.ID] == "" {
			names[rn.ID] = rn.Name
		}
	}
	return names
}

// groupView is a group as the API shows it.
func (n *Node) groupView(g fsm.Group, names map[string]string) api.GroupView {
	v := api.GroupView{ID: g.ID, Model: g.Model, Mode: g.Mode, State: string(g.State), Error: g.Error}
	for _, s := range g.Shards {
		sv := api.GroupShardView{WorkerID: s.WorkerID, Node: names[s.NodeID], NodeID: s.NodeID, Lo: s.Lo, Hi: s.Hi}
		if w, ok := n.reg.Worker(s.WorkerID); ok {
			sv.WorkerState = string(w.State)
		}
		v.Shards = append(v.Shards, sv)
	}
	return v
}

// unroutable are the workers the scheduler must not pick: every shard of
// a group but its head, the head of a group that is neither ready nor
// starting, and any worker started for a group (Worker.Group) that is not
// the head of that group, ready or starting: a shard re-adopted after its
// group was re-planned without it or deleted serves nobody.
func unroutable(groups []fsm.Group, workers []fsm.Worker) map[string]bool {
	out := map[string]bool{}
	heads := map[string]string{} // routable head → its group
	for _, g := range groups {
		live := g.State == fsm.GroupReady || g.State == fsm.GroupStarting
		for i, s := range g.Shards {
			if i > 0 || !live {
				out[s.WorkerID] = true
			} else {
				heads[s.WorkerID] = g.ID
			}
		}
	}
	for _, w := range workers {
		if w.Group != "" && heads[w.ID] != w.Group {
			out[w.ID] = true
		}
	}
	return out
}

// lists reports whether g has a shard with worker id.
func lists(g fsm.Group, id string) bool {
	for _, s := range g.Shards {
		if s.WorkerID == id {
			return true
		}
	}
	return false
}

// groupsPass runs after every worker loop pass: every node forgets the
// stage links of groups that are gone or that it no longer heads, and
// stops its orphaned shard workers; the leader fails groups that lost a
// shard, re-plans failed ones and deletes retired ones. Each of the
// leader's writes expects the entry it read (state and placement), so a
// stale read changes nothing.
func (n *Node) groupsPass(leader bool) {
	groups := n.reg.Groups()
	byID := map[string]fsm.Group{}
	for _, g := range groups {
		byID[g.ID] = g
	}
	linked := map[string]bool{}
	for _, id := range n.links.Groups() {
		linked[id] = true
		// A failed or starting group's links stay: a re-plan under the
		// same id may be adding new ones while this replica still says
		// failed.
		g, ok := byID[id]
		if !ok || g.State == fsm.GroupRetiring || g.State == fsm.GroupReady && g.Head().NodeID != n.ID() {
			n.links.Remove(id)
		}
	}
	// A ready group headed here without links: this node restarted (the
	// links lived in its memory), so the head cannot reach its shards.
	for _, g := range groups {
		if g.State == fsm.GroupReady && g.Head().NodeID == n.ID() && !linked[g.ID] {
			expect := &fsm.GroupExpect{State: fsm.GroupReady, Placement: g.Placement}
			g.State, g.Error, g.UpdatedAt = fsm.GroupFailed, "the head's node restarted: its stage links are gone", time.Now().UTC()
			n.applyQuiet(fsm.UpsertGroup{Group: g, Expect: expect})
		}
	}
	n.stopOrphanShards(byID)
	if !leader {
		n.cancelReplans()
		return
	}
	// A node's shards count as lost once the leader has recorded it
	// failed or left (gossip declared it dead), not at a suspicion: a
	// re-plan reloads the model everywhere.
	var up map[string]bool
	if len(groups) > 0 { // the leader runs this twice a second: no copy of every node without need
		up = map[string]bool{}
		n.reg.State().RangeNodes(func(rn fsm.Node) bool {
			up[rn.ID] = rn.State == fsm.NodeAlive
			return true
		})
	}
	for _, g := range groups {
		read := &fsm.GroupExpect{State: g.State, Placement: g.Placement}
		switch g.State {
		case fsm.GroupRetiring:
			// Shards registered since the retire (a node that was away)
			// retire too.
			ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
			n.retireShards(ctx, g)
			cancel()
			left := false
			for _, s := range g.Shards {
				if w, ok := n.reg.Worker(s.WorkerID); ok && w.State != fsm.WorkerGone {
					left = true
				}
			}
			if !left {
				n.applyQuiet(fsm.DeleteGroup{ID: g.ID, Expect: read})
			}
		case fsm.GroupReady:
			if why := lostShard(g, n.reg, up); why != "" {
				n.log.Warn("group lost a shard", "group", g.ID, "why", why)
				g.State, g.Error, g.UpdatedAt = fsm.GroupFailed, why, time.Now().UTC()
				n.applyQuiet(fsm.UpsertGroup{Group: g, Expect: read}) // the next pass retires its shards and re-plans it
			}
		case fsm.GroupStarting:
			// A placement that outlives this lost its node (or the job
			// hangs): failed, and the placement's own ready write, which
			// expects its starting entry, then fails.
			if n.groups.startingFor(g, time.Now()) > groupStartLimit {
				g.State, g.Error, g.UpdatedAt = fsm.GroupFailed, "its placement did not finish within "+groupStartLimit.String(), time.Now().UTC()
				n.applyQuiet(fsm.UpsertGroup{Group: g, Expect: read})
			}
		case fsm.GroupFailed:
			ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
			n.retireShards(ctx, g)
			cancel()
			n.replanSoon(g)
		}
	}
	n.groups.forgetStarting(byID)
	// Forget the pacing of groups that are no longer failed.
	n.groups.mu.Lock()
	for id := range n.groups.nextTry {
		if g, ok := byID[id]; !ok || g.State != fsm.GroupFailed {
			if n.groups.replans[id] == nil {
				delete(n.groups.nextTry, id)
				delete(n.groups.fails, id)
			}
		}
	}
	n.groups.mu.Unlock()
}

// stopOrphanShards stops this node's shard workers that no group lists
// (Worker.Group set, its group gone or re-planned without it) once they
// have been seen so for orphanShardGrace with a current replica. A
// group's listed shards are the registry's to retire.
func (n *Node) stopOrphanShards(byID map[string]fsm.Group) {
	if n.procs == nil {
		return
	}
	stale := n.cons.Stale()
	now := time.Now()
	seen := map[string]bool{}
	for _, info := range n.procs.Infos() {
		if info.Group == "" {
			continue
		}
		if g, ok := byID[info.Group]; ok && lists(g, info.WorkerID) {
			continue
		}
		seen[info.WorkerID] = true
		n.groups.mu.Lock()
		since, ok := n.groups.orphanSince[info.WorkerID]
		if !ok || stale {
			// A replica without a leader may be behind: the clock starts
			// when it is current.
			since = now
			n.groups.orphanSince[info.WorkerID] = now
		}
		n.groups.mu.Unlock()
		if now.Sub(since) >= orphanShardGrace {
			n.stopLocal(info.WorkerID, info.PID, "orphaned shard of group "+info.Group)
		}
	}
	n.groups.mu.Lock()
	for id := range n.groups.orphanSince {
		if !seen[id] {
			delete(n.groups.orphanSince, id)
		}
	}
	n.groups.mu.Unlock()
}

// registryWorkers is the registry read lostShard needs.
type registryWorkers interface {
	Worker(id string) (fsm.Worker, bool)
}

// lostShard says why a ready group cannot serve, "" when it can: a shard
// whose worker left the registry, is gone or retiring, or whose node is
// not up (the registry's node state).
func lostShard(g fsm.Group, reg registryWorkers, up map[string]bool) string {
	for _, s := range g.Shards {
		w, ok := reg.Worker(s.WorkerID)
		switch {
		case !ok || w.State == fsm.WorkerGone:
			return fmt.Sprintf("shard %s [%d, %d) is gone", s.WorkerID, s.Lo, s.Hi)
		case w.State == fsm.WorkerRetiring:
			return fmt.Sprintf("shard %s [%d, %d) was retired", s.WorkerID, s.Lo, s.Hi)
		case !up[s.NodeID]:
			return fmt.Sprintf("the node of shard %s [%d, %d) is down", s.WorkerID, s.Lo, s.Hi)
		}
	}
	return ""
}

// applyQuiet writes a command from a background loop; failures are
// logged (the next pass tries again).
func (n *Node) applyQuiet(c fsm.Command) {
	cmd, err := fsm.Encode(c)
	if err != nil {
		n.log.Warn("encode", "cmd", c.Type(), "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	if _, err := n.apply(ctx, cmd); err != nil {
		n.log.Debug("apply", "cmd", c.Type(), "err", err)
	}
}

// cancelReplans stops the re-plans this node started as the leader (it
// no longer is: the new leader re-plans).
func (n *Node) cancelReplans() {
	n.groups.mu.Lock()
	defer n.groups.mu.Unlock()
	for id, cancel := range n.groups.replans {
		cancel()
		delete(n.groups.replans, id)
	}
}

// replanSoon starts a re-plan of a failed group on the alive hives (one at
// a time per group; after a failure the next waits groupReplanRetry,
// doubled each time up to groupReplanRetryMax): as many shards as before
// when that many hives are alive, else fewer (at least 2). The re-plan is
// cancelled when this node stops leading; its writes expect the failed
// entry it re-plans, so a re-plan by another leader at the same time
// fails.
func (n *Node) replanSoon(g fsm.Group) {
	n.groups.mu.Lock()
	if n.groups.replans[g.ID] != nil || time.Now().Before(n.groups.nextTry[g.ID]) {
		n.groups.mu.Unlock()
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, groupReplanTimeout)
	n.groups.replans[g.ID] = cancel
	n.groups.mu.Unlock()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		ok := n.replan(ctx, g)
		cancel()
		n.groups.mu.Lock()
		delete(n.groups.replans, g.ID)
		if ok {
			delete(n.groups.fails, g.ID)
			delete(n.groups.nextTry, g.ID)
		} else {
			n.groups.nextTry[g.ID] = time.Now().Add(replanDelay(n.groups.fails[g.ID]))
			n.groups.fails[g.ID]++
		}
		n.groups.mu.Unlock()
	}()
}

// replan runs one re-plan of failed group g: a worker_spawn of its model
// on the alive hives, by the first (the head's hive places it).
func (n *Node) replan(ctx context.Context, g fsm.Group) bool {
	hives := placement.HivesByRAM(n.reg.Nodes(), n.aliveIDs())
	count := min(len(g.Shards), len(hives))
	if count < 2 {
		n.log.Warn("group re-plan: too few hives alive", "group", g.ID, "alive", len(hives))
		n.noteReplanFailure(g, fmt.Sprintf("%d hive(s) alive, a group needs 2", len(hives)))
		return false
	}
	var names []string
	for _, h := range hives[:count] {
		names = append(names, h.Name)
	}
	target, err := n.resolveHive(names[0])
	if err != nil {
		return false
	}
	r := replanRequest(g, names)
	req, err := spawnRequest(names[0], r)
	if err != nil {
		return false
	}
	n.log.Info("re-planning group", "group", g.ID, "model", g.Model, "hives", names)
	sub := &subEmitter{em: discardEmitter{}}
	if target.ID == n.ID() {
		err = n.opGroupSpawn(ctx, sub, req, r)
	} else {
		err = n.forwardJob(ctx, target, req, sub)
	}
	if err != nil {
		n.log.Warn("group re-plan failed", "group", g.ID, "err", err, "detail", sub.err)
		why := sub.err
		if why == "" || !errors.Is(err, jobs.ErrReported) {
			why = err.Error()
		}
		n.noteReplanFailure(g, why)
		return false
	}
	n.log.Info("group re-planned", "group", g.ID, "hives", names)
	return true
}

// discardEmitter drops a background job's events.
type discardEmitter struct{}

func (discardEmitter) Emit(jobs.Event)                        {}
func (discardEmitter) Narrate(string, string, string, ...any) {}
func (discardEmitter) Progress(int64, int64, string)          {}
func (discardEmitter) Result(any) error                       { return nil }

// newLinks is this node's stage-link bridge.
func (n *Node) newLinks() *shardlink.Bridge {
	return shardlink.New(shardlink.Config{LocalID: n.ID(), Host: n.host, Workers: supervision{n}, Groups: linkGroups{n},
		Logger: n.log.With("component", "shardlink")})
}

// linkGroups authorizes stage links from the registry replica.
type linkGroups struct{ n *Node }

// HeadNode implements shardlink.Groups.
func (l linkGroups) HeadNode(workerID string) (string, bool) {
	g, ok := l.n.reg.GroupOf(workerID)
	if !ok || g.Head().WorkerID == workerID || g.State != fsm.GroupStarting && g.State != fsm.GroupReady {
		return "", false
	}
	return g.Head().NodeID, true
}

// autoSplit returns the hives a cpu spawn without a hive is split over
// when no alive hive has the free RAM for the model alone (placement's
// estimate from its GGUF), this node first when the model is not
// movable (a path: this node's file), and not at all when such a split
// leaves this node out; when movable, one hive, not this one, when
// this node reports too little free RAM for it and that hive (the one
// with the most) has enough: the whole worker runs there; nil when this node holds it, when
// nothing is known or when the cluster's registry is below version 3 (no
// groups yet). A model no set of hives holds is spawned here unsplit, as
// before, with a warning.
func (n *Node) autoSplit(em jobs.Emitter, model modelcat.Entry, mode string, ctxLen, slots int, kvCache string, movable bool) []string {
	if n.reg.RegistryVersion() < 3 {
		// Some server's build does not know groups (a rolling upgrade):
		// the group write would be refused.
		return nil
	}
	est := cpuEstimate(model, ctxLen, slots, kvCache)
	dims, err := placement.ModelDims(model)
	if err != nil {
		em.Narrate("scheduler", "place", "cannot split %s: %v; spawning unsplit here", model.ID, err)
		return nil
	}
	// The units the group is cut into: layers (a pipeline, the default)
	// or KV heads (tensor), as opGroupSpawn will cut it.
	units := dims.Layers
	if mode == fsm.GroupTensor {
		if dims.Experts > 0 {
			em.Narrate("scheduler", "place", "%s is a mixture of experts, which splits by layers, not KV heads; spawning unsplit here", model.ID)
			return nil
		}
		units = dims.KVHeads
	}
	hives := placement.HivesByRAM(n.reg.Nodes(), n.aliveIDs())
	plan, err := placement.PlanSplit(est, hives, fsm.MaxGroupShards, units)
	if err != nil {
		em.Narrate("scheduler", "place", "%v; spawning unsplit here", err)
		return nil
	}
	if plan == nil && movable && len(hives) > 0 && hives[0].NodeID != n.ID() && hives[0].Free >= est.Total() {
		// One hive holds it whole: this one too, unless it reports less.
		for _, h := range hives {
			if h.NodeID == n.ID() && h.Free > 0 && h.Free < est.Total() {
				em.Narrate("scheduler", "place", "%s needs %s; %s has %s free, %s has %s: spawning it there",
					model.ID, est, h.Name, humanize.Bytes(h.Free), hives[0].Name, humanize.Bytes(hives[0].Free))
				return []string{hives[0].Name}
			}
		}
		return nil
	}
	if len(plan) > 0 && !movable {
		// The model is a file of this node, which must head the group.
		var here bool
		if plan, here = hereFirst(plan, n.ID()); !here {
			em.Narrate("scheduler", "place", "no hive has %s free for %s, and a split over %d hives with the most free RAM would not include %s, which has its file (a path); spawning unsplit here",
				est, model.ID, len(plan), n.cfg.Name)
			return nil
		}
	}
	var names []string
	for _, h := range plan {
		names = append(names, h.Name)
	}
	if len(names) > 0 {
		em.Narrate("scheduler", "place", "no hive has %s free for %s: splitting it over %s", est, model.ID, strings.Join(names, ", "))
	}
	return names
}

// spawnWholeOn forwards a cpu spawn without a hive to hive, which
// autoSplit found holds the model whole where this node does not.
func (n *Node) spawnWholeOn(ctx context.Context, em jobs.Emitter, req Request, hive string) error {
	target, err := n.resolveHive(hive)
	if err != nil {
		return err
	}
	return n.forwardPlaced(ctx, em, req, target, nil)
}

// noteReplanFailure records on failed group g (as the leader read it)
// why its re-plan failed, for `worker list` and the web page, unless the
// entry changed meanwhile (retired, or a placement that got further
// wrote its own failure).
func (n *Node) noteReplanFailure(g fsm.Group, why string) {
	g.Error = "re-plan failed: " + why
	if len(g.Error) > maxGroupError {
		g.Error = g.Error[:maxGroupError]
	}
	n.applyQuiet(fsm.UpsertGroup{Group: g, Expect: &fsm.GroupExpect{State: fsm.GroupFailed, Placement: g.Placement}})
}

// localRef reports whether a model reference is one this hive's catalog
// resolves (a catalog id, a short name or a path), not one every hive
// fetches itself (hf:, a URL, builtin:).
func localRef(ref string) bool {
	pr, err := modelcat.ParseRef(ref)
	return err != nil || pr.Source == modelcat.SourceLocal
}

// pathRef reports whether a model reference names a file by its path: a
// file of the node the request reached, which no other hive can resolve
// until the registry lists its holding (a catalog id or short name it
// resolves from the registry).
func pathRef(ref string) bool {
	pr, err := modelcat.ParseRef(ref)
	return err == nil && pr.Source == modelcat.SourceLocal && (strings.HasPrefix(ref, "file:") || strings.ContainsAny(ref, `/\`))
}

// hereFirst returns hives with node id's entry moved to the front (the
// others in their order), and whether it was among them.
func hereFirst(hives []placement.HiveRAM, id string) ([]placement.HiveRAM, bool) {
	for i, h := range hives {
		if h.NodeID == id {
			out := append([]placement.HiveRAM{h}, hives[:i]...)
			return append(out, hives[i+1:]...), true
		}
	}
	return hives, false
}

// cpuEstimate is the RAM a cpu worker of model needs whole, for the
// spawn's context, slots and KV cache type.
func cpuEstimate(model modelcat.Entry, ctxLen, slots int, kvCache string) placement.MemEstimate {
	est := placement.Estimate(model, ctxLen)
	if kvCache == "f32" {
		est = est.WithF32KV()
	}
	return est.WithSlots(slots)
}

// replanRequest is the spawn that places group g again over the hives
// names (the head first): the group's own parameters, so that the new
// shards run as the old ones did (the same worker version among them).
func replanRequest(g fsm.Group, names []string) api.WorkerSpawnRequest {
	return api.WorkerSpawnRequest{OnHive: api.OnHive{Hive: names[0]}, Model: g.Model, Threads: g.Threads, Slots: g.Slots, Ctx: g.Ctx,
		KVCache: g.KVCache, Version: g.Version, Shards: len(names), Hives: names, Mode: g.Mode, Group: g.ID}
}
