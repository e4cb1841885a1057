package consensus

import (
	"context"
	"errors"
	"maps"
	"reflect"
	"sort"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rbee-project/rbee/fsm"
)

// leavingGrace is how long the leader refuses to re-add a server that asked
// to leave: long enough for its gossip leave to arrive.
const leavingGrace = time.Minute

// kickLeaderLoop asks the leader loop for a reconcile pass; non-blocking.
func (c *Consensus) kickLeaderLoop() {
	select {
	case c.kickLeader <- struct{}{}:
	default:
	}
}

// reconcileSoon marks members for the leader loop's next pass (every
// member when ids is empty) and kicks it.
func (c *Consensus) reconcileSoon(ids ...string) {
	c.dirtyMu.Lock()
	if len(ids) == 0 {
		c.dirtyAll = true
	}
	for _, id := range ids {
		c.dirty[id] = struct{}{}
	}
	c.dirtyMu.Unlock()
	c.kickLeaderLoop()
}

// takeDirty returns and clears the marked members; all: a full pass was
// asked for.
func (c *Consensus) takeDirty() (ids []string, all bool) {
	c.dirtyMu.Lock()
	defer c.dirtyMu.Unlock()
	all = c.dirtyAll
	for id := range c.dirty {
		ids = append(ids, id)
	}
	clear(c.dirty)
	c.dirtyAll = false
	sort.Strings(ids)
	return ids, all
}

// fullPassShare: when more than this share of the members changed since
// the last pass, the leader loop runs a full pass instead of one over the
// changed members (a full pass lists the members once; looking each
// changed one up costs about as much past this share).
const fullPassShare = 4

func (c *Consensus) markLeaving(id string) { c.left.Add(id) }

func (c *Consensus) isLeaving(id string) bool { return c.left.Has(id) }

// leaderLoop runs while this server is the leader: a barrier (so the local
// FSM has every committed entry), then a full reconcile pass at once and
// every ReconcileInterval, and in between a pass over the members marked
// since the last one (MembershipChanged with ids): a join storm of n
// members costs O(n) member checks instead of n full passes of O(n) each.
func (c *Consensus) leaderLoop(ctx context.Context) {
	r, err := c.running()
	if err != nil {
		return
	}
	// The throttle goes by this leader's configuration, whatever it held
	// from before (see resetServers).
	seq := c.throttle.configSeq()
	if cf := r.GetConfiguration(); c.await(ctx, cf) == nil {
		c.throttle.resetServers(cf, seq)
	}
	backoff := 50 * time.Millisecond
	for {
		err := c.await(ctx, r.Barrier(c.cfg.ApplyTimeout))
		if err == nil {
			break
		}
		c.log.Warn("leader barrier failed", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
	ticker := time.NewTicker(c.cfg.ReconcileInterval)
	defer ticker.Stop()
	// absent: when this leader first saw each registry node missing from
	// Members(). Per leadership term on purpose: a new leader waits a full
	// ReapGrace before reaping, whatever its predecessor saw.
	absent := map[string]time.Time{}
	full := true
	for {
		if c.handOffHalted(ctx, r) {
			return
		}
		ids, all := c.takeDirty()
		var err error
		switch {
		case full || all || len(ids)*fullPassShare > c.memberCount():
			err = c.reconcile(ctx, r, nil, absent)
		case len(ids) > 0:
			err = c.reconcile(ctx, r, ids, absent)
		}
		if err != nil && ctx.Err() == nil {
			c.log.Warn("reconcile failed", "err", err)
		}
		full = false
		select {
		case <-ctx.Done():
			return
		case <-c.kickLeader:
		case <-ticker.C:
			full = true
		}
	}
}

// handOffHalted: a leader whose registry replica halted (it met a command
// of a newer build: this node was downgraded) must not lead, since its
// reconcile passes would write from a registry that stopped at the halt
// and its own applies fail every write; it hands leadership to another
// voter, trying again until one takes it or ctx (the term) ends. It
// reports whether it did not return to leading (ctx ended).
func (c *Consensus) handOffHalted(ctx context.Context, r *raft.Raft) bool {
	herr := c.cfg.FSM.Halted()
	if herr == nil {
		return false
	}
	c.log.Error("this node leads with a halted registry (run the newer build here): handing leadership to another voter", "err", herr)
	backoff := 100 * time.Millisecond
	for {
		err := c.await(ctx, r.LeadershipTransfer())
		if err == nil || ctx.Err() != nil || r.State() != raft.Leader {
			return true
		}
		c.log.Debug("leadership transfer from a halted leader failed; trying again", "err", err)
		select {
		case <-ctx.Done():
			return true
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// memberCount is the number of members in the last full pass (0 before
// one), for choosing between a full and an incremental pass.
func (c *Consensus) memberCount() int { return int(c.lastMembers.Load()) }

// member looks one member up in the gossip view.
func (c *Consensus) member(id string) (Member, bool) {
	if c.cfg.Member != nil {
		return c.cfg.Member(id)
	}
	for _, m := range c.cfg.Members() {
		if m.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

// reconcile makes the raft configuration and the registry's node entries
// match the gossip view: for every member (ids nil) or for the members
// with those ids. Only differences are written.
func (c *Consensus) reconcile(ctx context.Context, r *raft.Raft, ids []string, absent map[string]time.Time) error {
	if r.State() != raft.Leader {
		return ErrNotLeader
	}
	cf := r.GetConfiguration()
	if err := c.await(ctx, cf); err != nil {
		return err
	}
	servers := cf.Configuration().Servers
	c.throttle.setServers(servers, cf.Index())
	c.noteSuffrage(servers)
	p := c.newPass(raftOps{c: c, ctx: ctx, r: r}, c.cfg.FSM.State(), servers)
	var err error
	if ids == nil {
		var members []Member
		if c.cfg.Members != nil {
			members = c.cfg.Members()
		}
		c.lastMembers.Store(int64(len(members)))
		err = p.run(ctx, members, absent)
	} else {
		err = p.runMembers(ctx, ids, c.member, absent)
	}
	// What the pass added, removed or promoted reached the throttle as
	// raft stored it (storeNotifier).
	return err
}

// reconcileOps are the changes a reconcile pass makes: raft's
// configuration and registry commands. raftOps applies them to the running
// raft; tests record them.
type reconcileOps interface {
	addServer(id string, voter bool) error
	removeServer(id string) error
	// propose starts a registry command and returns what waits for its
	// outcome: a pass waits for all of its commands at its end, so they
	// commit together instead of one round of replication each.
	propose(cmd fsm.Command) (wait func() error)
}

// raftOps applies reconcile changes through raft, as the leader.
type raftOps struct {
	c   *Consensus
	ctx context.Context
	r   *raft.Raft
}

func (o raftOps) addServer(id string, voter bool) error {
	add := o.r.AddNonvoter
	if voter {
		add = o.r.AddVoter
	}
	return o.c.await(o.ctx, add(raft.ServerID(id), raft.ServerAddress(id), 0, o.c.cfg.ApplyTimeout))
}

func (o raftOps) removeServer(id string) error {
	return o.c.await(o.ctx, o.r.RemoveServer(raft.ServerID(id), 0, o.c.cfg.ApplyTimeout))
}

func (o raftOps) propose(cmd fsm.Command) func() error { return o.c.propose(o.ctx, o.r, cmd) }

// reconcilePass is one reconcile pass: the raft configuration as it
// changes during the pass, the registry as it was at its start, and the
// errors met (the pass goes on after an error and reports them all).
type reconcilePass struct {
	c       *Consensus
	ops     reconcileOps
	st      *fsm.State
	now     time.Time // UTC, for registry timestamps
	clock   time.Time // monotonic, for the absence bookkeeping
	servers map[string]raft.Server
	voters  int
	errs    []error
	pending []func() error // commands proposed, not yet waited for (see wait)
	// kickAfter asks for a pass over member id after d (it becomes
	// reapable).
	kickAfter func(d time.Duration, id string)
	// blind: this leader's gossip view sees fewer than a majority of the
	// voters (see seesQuorum); the pass then marks nobody failed and
	// reaps nobody.
	blind bool
}

func (c *Consensus) newPass(ops reconcileOps, st *fsm.State, servers []raft.Server) *reconcilePass {
	now := time.Now()
	p := &reconcilePass{
		c: c, ops: ops, st: st, now: now.UTC(), clock: now,
		servers:   make(map[string]raft.Server, len(servers)),
		kickAfter: func(d time.Duration, id string) { time.AfterFunc(d, func() { c.reconcileSoon(id) }) },
	}
	for _, s := range servers {
		p.servers[string(s.ID)] = s
		if s.Suffrage == raft.Voter {
			p.voters++
		}
	}
	return p
}

// run reconciles every member (in id order), reaps registry nodes gossip
// no longer knows, and promotes non-voters while there is room.
func (p *reconcilePass) run(ctx context.Context, list []Member, absent map[string]time.Time) error {
	members := map[string]Member{}
	var ids []string
	for _, m := range list {
		if m.ID == "" {
			continue
		}
		if _, dup := members[m.ID]; !dup {
			ids = append(ids, m.ID)
		}
		members[m.ID] = m
	}
	sort.Strings(ids)
	p.checkView(func(id string) (Member, bool) { m, ok := members[id]; return m, ok })
	for _, id := range ids {
		p.reconcileMember(members[id])
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	// Reap only when gossip knows this server itself: an empty startup
	// view must not shrink the cluster.
	if _, selfSeen := members[p.c.cfg.LocalID]; selfSeen {
		p.reconcileReaped(members, absent)
	}
	p.promoteNonvoters(func(id string) bool {
		m, ok := members[id]
		return ok && m.State == MemberAlive
	}, func() []Member { return list })
	return p.wait()
}

// runMembers is run for the members with the given ids: each is
// reconciled as it is in the gossip view (lookup), or, when gossip no
// longer knows it, handled as a registry node to reap. Non-voters are
// promoted while there is room.
func (p *reconcilePass) runMembers(ctx context.Context, ids []string, lookup func(id string) (Member, bool), absent map[string]time.Time) error {
	_, selfSeen := lookup(p.c.cfg.LocalID)
	p.checkView(lookup)
	for _, id := range ids {
		if m, ok := lookup(id); ok {
			delete(absent, id)
			p.reconcileMember(m)
		} else if n, ok := p.st.Node(id); ok && selfSeen && id != p.c.cfg.LocalID {
			p.reapAbsent(n, absent)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	p.promoteNonvoters(func(id string) bool {
		m, ok := lookup(id)
		return ok && m.State == MemberAlive
	}, p.c.cfg.Members)
	return p.wait()
}

// reconcileMember brings raft and the registry in line with one member.
func (p *reconcilePass) reconcileMember(m Member) {
	if m.State != MemberLeft && p.foreign(m) {
		// A node with a registry of another cluster (it started
		// alone with the secret, then was joined by gossip): raft
		// would overwrite its log but not what it has applied, so it
		// would run on with two registries mixed. Neither raft nor the
		// registry takes it, in any state.
		p.c.noteForeign(m)
		return
	}
	p.c.forgetForeign(m.ID)
	switch m.State {
	case MemberAlive:
		p.handleAliveMember(m)
	case MemberSuspect:
		p.handleSuspectMember(m)
	case MemberFailed:
		p.handleFailedMember(m)
	case MemberLeft:
		p.handleLeftMember(m)
	}
}

// handleAliveMember adds an alive member to raft (a voter while there is
// room or when it already was one; not this server, not one that asked to
// leave) and records it alive in the registry. A member that can follow the
// registry by feed (Member.Replica) is no non-voter: with the voters full
// it stays outside raft (a non-voter of an older leader is removed), as a
// replica that a voter feeds (feed.go). If raft refuses it, its registry
// entry waits for the next pass.
func (p *reconcilePass) handleAliveMember(m Member) {
	id := m.ID
	srv, inConfig := p.servers[id]
	if id != p.c.cfg.LocalID && !p.c.isLeaving(id) {
		switch {
		case !inConfig || srv.Address != raft.ServerAddress(id):
			voter := p.voters < p.c.cfg.MaxVoters || (inConfig && srv.Suffrage == raft.Voter)
			if !voter && m.Replica {
				if inConfig {
					p.removeNonvoter(id)
				}
				break
			}
			suffrage := raft.Nonvoter
			if voter {
				suffrage = raft.Voter
			}
			p.c.log.Info("adding server", "id", id, "name", m.Name, "as", suffrage.String())
			if err := p.ops.addServer(id, voter); err != nil {
				p.errs = append(p.errs, err)
				return
			}
			if voter && !inConfig {
				p.voters++
			}
			p.servers[id] = raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(id), Suffrage: suffrage}
		case srv.Suffrage != raft.Voter && m.Replica && p.voters >= p.c.cfg.MaxVoters:
			p.removeNonvoter(id)
		}
	}
	p.ensureNode(m, fsm.NodeAlive)
}

// removeNonvoter takes a non-voter that can follow the registry by feed out
// of raft: the leader then sends it nothing.
func (p *reconcilePass) removeNonvoter(id string) {
	p.c.log.Info("non-voter follows the registry by feed: removing it from raft", "id", id)
	if err := p.ops.removeServer(id); err != nil {
		p.errs = append(p.errs, err)
		return
	}
	delete(p.servers, id)
}

// handleSuspectMember leaves raft as it is (suspicion is transient) and
// only makes sure the registry knows the node.
func (p *reconcilePass) handleSuspectMember(m Member) {
	if _, ok := p.st.Node(m.ID); !ok {
		p.ensureNode(m, fsm.NodeAlive)
	}
}

// handleFailedMember keeps a failed member in raft (it may come back)
// until it is reaped, and records it failed in the registry; not while
// this leader's view is blind (see seesQuorum).
func (p *reconcilePass) handleFailedMember(m Member) {
	if p.blind {
		return
	}
	if wait := p.c.raftHears(m.ID); wait > 0 {
		// Raft still reaches it: gossip's view is the one at fault
		// (this leader's gossip port blocked, while the others fail
		// one by one before its view goes blind). Look again once the
		// contact would have gone stale.
		p.kickAfter(wait, m.ID)
		return
	}
	p.ensureNode(m, fsm.NodeFailed)
}

// RaftReaches reports whether this node, as leader, reached server id over
// raft recently (an RPC answered within raftContactMisses of its heartbeat
// periods): then gossip calling it dead is this
// node's view at fault, not the server. False when not known. Safe for
// concurrent use.
func (c *Consensus) RaftReaches(id string) bool { return c.raftHears(id) > 0 }

// raftContactMisses is how many of its idle heartbeats a server may miss
// before this leader's raft contact with it counts as lost: several, so
// that one late heartbeat on a loaded machine does not decide.
const raftContactMisses = 4

// raftHears returns, for a server this leader's raft reached within
// raftContactMisses of its heartbeat periods, how long until that contact
// counts as lost; 0 when it does already, or is not known (no answer
// recorded, no transport).
func (c *Consensus) raftHears(id string) time.Duration {
	if c.throttle == nil || id == c.cfg.LocalID {
		return 0
	}
	age, every, ok := c.throttle.contact(id)
	if !ok {
		return 0
	}
	window := raftContactMisses * max(every, c.tm.heartbeat)
	if age >= window {
		return 0
	}
	return window - age
}

// handleLeftMember removes a member that left from raft (never this
// server) and records it left in the registry.
func (p *reconcilePass) handleLeftMember(m Member) {
	id := m.ID
	if srv, inConfig := p.servers[id]; inConfig && id != p.c.cfg.LocalID {
		p.c.log.Info("removing left server", "id", id, "name", m.Name)
		if err := p.ops.removeServer(id); err != nil {
			p.errs = append(p.errs, err)
		} else if srv.Suffrage == raft.Voter {
			p.voters--
		}
		delete(p.servers, id)
	}
	if n, ok := p.st.Node(id); ok && n.State != fsm.NodeLeft {
		p.propose(fsm.SetNodeState{ID: id, State: fsm.NodeLeft, At: p.now})
	}
}

// reconcileReaped handles registry nodes that gossip no longer knows: an
// alive one is marked failed at once; after it has been absent for
// ReapGrace in this leader's eyes (absent remembers since when, per
// leadership term), it leaves raft and the registry. A node that shows up
// again is forgotten from absent.
func (p *reconcilePass) reconcileReaped(members map[string]Member, absent map[string]time.Time) {
	stillAbsent := map[string]bool{}
	for _, n := range p.st.Nodes() {
		if _, ok := members[n.ID]; ok || n.ID == p.c.cfg.LocalID {
			continue
		}
		stillAbsent[n.ID] = true
		p.reapAbsent(n, absent)
	}
	for id := range absent {
		if !stillAbsent[id] {
			delete(absent, id)
		}
	}
}

// reapAbsent handles one registry node that gossip does not know (see
// reconcileReaped).
func (p *reconcilePass) reapAbsent(n fsm.Node, absent map[string]time.Time) {
	if p.blind {
		// This leader is the one cut off from gossip: what it misses
		// is no evidence, and its absence clock starts again once it
		// sees a majority.
		delete(absent, n.ID)
		return
	}
	first, seen := absent[n.ID]
	if !seen {
		first = p.clock
		absent[n.ID] = first
	}
	if n.State == fsm.NodeAlive {
		// Vanished without a failure seen by gossip: mark it failed.
		p.propose(fsm.SetNodeState{ID: n.ID, State: fsm.NodeFailed, At: p.now})
	}
	if wait := p.c.cfg.ReapGrace - p.clock.Sub(first); wait > 0 {
		p.kickAfter(wait, n.ID)
		return
	}
	if srv, ok := p.servers[n.ID]; ok {
		p.c.log.Info("reaping server", "id", n.ID, "name", n.Name)
		if err := p.ops.removeServer(n.ID); err != nil {
			p.errs = append(p.errs, err)
			return
		}
		if srv.Suffrage == raft.Voter {
			p.voters--
		}
		delete(p.servers, n.ID)
	}
	p.propose(fsm.DeleteNode{ID: n.ID})
}

// seesQuorum reports whether a gossip view (lookup) sees a majority of
// the voters among servers alive or suspect. Raft and gossip travel on
// different paths: a leader whose gossip is cut off (its gossip port
// blocked, its libp2p fine) keeps its raft majority while gossip tells it
// every other node failed. Acting on that view marked the healthy
// majority failed, deleted its workers and reaped its voters from raft,
// leaving the majority without a leader and the cut-off node a one-voter
// cluster. Without a majority in view, the view is no evidence.
func seesQuorum(servers map[string]raft.Server, lookup func(id string) (Member, bool)) bool {
	voters, seen := 0, 0
	for id, s := range servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if m, ok := lookup(id); ok && (m.State == MemberAlive || m.State == MemberSuspect) {
			seen++
		}
	}
	return voters == 0 || 2*seen > voters
}

// checkView sets p.blind from the gossip view and logs when that changes.
func (p *reconcilePass) checkView(lookup func(id string) (Member, bool)) {
	p.blind = !seesQuorum(p.servers, lookup)
	if p.c.blindView.Swap(p.blind) != p.blind {
		if p.blind {
			p.c.log.Warn("gossip sees fewer than a majority of the raft voters: marking no node failed and reaping none until it does (is this node's gossip port blocked?)", "voters", p.voters)
		} else {
			p.c.log.Info("gossip sees a majority of the raft voters again")
		}
	}
}

// ViewHasQuorum reports whether this server's gossip view sees a majority
// of the raft voters alive or suspect (see seesQuorum). A leader acts on
// gossip's failures only when it does. False when raft is not running or
// its configuration cannot be read.
func (c *Consensus) ViewHasQuorum() bool {
	r, err := c.running()
	if err != nil {
		return false
	}
	f := r.GetConfiguration()
	if err := c.await(context.Background(), f); err != nil {
		return false
	}
	servers := map[string]raft.Server{}
	for _, s := range f.Configuration().Servers {
		servers[string(s.ID)] = s
	}
	return seesQuorum(servers, c.member)
}

// promoteNonvoters makes alive non-voters, then alive replicas (members
// outside raft that follow the registry by feed), voters, in id order,
// while there are fewer than MaxVoters (with MaxVoters voters, as a cluster
// past five nodes has, it looks at nothing). members lists the gossip view;
// it is called only when there is room.
func (p *reconcilePass) promoteNonvoters(alive func(id string) bool, members func() []Member) {
	if p.voters >= p.c.cfg.MaxVoters {
		return
	}
	var nonvoters, replicas []string
	for id, s := range p.servers {
		if s.Suffrage != raft.Voter && alive(id) {
			nonvoters = append(nonvoters, id)
		}
	}
	var list []Member
	if members != nil {
		list = members()
	}
	for _, m := range list {
		if _, in := p.servers[m.ID]; in || !m.Replica || m.State != MemberAlive || m.ID == p.c.cfg.LocalID ||
			p.c.isLeaving(m.ID) || p.foreign(m) {
			continue
		}
		if _, known := p.st.Node(m.ID); known {
			replicas = append(replicas, m.ID)
		}
	}
	sort.Strings(nonvoters)
	sort.Strings(replicas)
	for _, id := range append(nonvoters, replicas...) {
		if p.voters >= p.c.cfg.MaxVoters {
			break
		}
		p.c.log.Info("promoting to voter", "id", id)
		if err := p.ops.addServer(id, true); err != nil {
			p.errs = append(p.errs, err)
			continue
		}
		p.servers[id] = raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(id), Suffrage: raft.Voter}
		p.voters++
	}
}

// ensureNode writes the member's node entry if it differs from the
// registry (proposed; the pass waits for it at its end).
func (p *reconcilePass) ensureNode(m Member, state fsm.NodeState) {
	want := fsm.Node{
		ID: m.ID, Name: m.Name, HTTPAddr: m.HTTPAddr, HTTPSAddr: m.HTTPSAddr, GossipAddr: m.GossipAddr,
		P2PAddrs: m.P2PAddrs, Version: m.Version, State: state,
	}
	if len(want.P2PAddrs) == 0 {
		want.P2PAddrs = nil
	}
	old, ok := p.st.Node(m.ID)
	if ok {
		got := fsm.Node{
			ID: old.ID, Name: old.Name, HTTPAddr: old.HTTPAddr, HTTPSAddr: old.HTTPSAddr, GossipAddr: old.GossipAddr,
			P2PAddrs: old.P2PAddrs, Version: old.Version, State: old.State,
		}
		if reflect.DeepEqual(got, want) {
			return
		}
		if old.State != state && reflect.DeepEqual(withState(got, state), want) {
			p.propose(fsm.SetNodeState{ID: m.ID, State: state, At: p.now})
			return
		}
	}
	want.UpdatedAt = p.now
	p.propose(fsm.UpsertNode{Node: want})
}

// propose starts a registry command of the pass; wait waits for it.
func (p *reconcilePass) propose(cmd fsm.Command) {
	p.pending = append(p.pending, p.ops.propose(cmd))
}

// wait waits for the commands the pass proposed and adds their errors
// to the pass's.
func (p *reconcilePass) wait() error {
	for _, w := range p.pending {
		p.errs = append(p.errs, w())
	}
	p.pending = nil
	return errors.Join(p.errs...)
}

func withState(n fsm.Node, s fsm.NodeState) fsm.Node {
	n.State = s
	return n
}

// propose starts a command from the leader loop and returns what waits
// for its outcome.
func (c *Consensus) propose(ctx context.Context, r *raft.Raft, cmd fsm.Command) (wait func() error) {
	b, err := fsm.Encode(cmd)
	if err != nil {
		return func() error { return err }
	}
	finish := c.startApply(r, ctx, b)
	return func() error {
		_, err := finish()
		return err
	}
}

// foreign reports a member that advertises another cluster than this
// registry's and is neither a raft server nor in the registry here (one
// that is, joined this cluster: its advertisement is late or wrong, and
// the usual handling applies).
func (p *reconcilePass) foreign(m Member) bool {
	if m.Cluster == "" || m.ID == p.c.cfg.LocalID {
		return false
	}
	if _, inConfig := p.servers[m.ID]; inConfig {
		return false
	}
	if _, known := p.st.Node(m.ID); known {
		return false
	}
	ca, ok := p.st.ClusterCA()
	return ok && ca.ID() != m.Cluster
}

// forgetForeign drops id from the foreign members: it advertises this
// cluster now (rejoined with an empty raft/ dir), or is known here.
func (c *Consensus) forgetForeign(id string) {
	c.foreignMu.Lock()
	defer c.foreignMu.Unlock()
	delete(c.foreign, id)
}

// noteForeign records that member m carries another cluster's registry and
// says so once per member and cluster: the leader does not add it.
func (c *Consensus) noteForeign(m Member) {
	c.foreignMu.Lock()
	defer c.foreignMu.Unlock()
	if c.foreign == nil {
		c.foreign = map[string]string{}
	}
	if c.foreign[m.ID] == m.Cluster {
		return
	}
	c.foreign[m.ID] = m.Cluster
	c.log.Warn("a member holds another cluster's registry (its CA differs): not adding it; start it with an empty raft/ dir and --join to make it a member",
		"id", m.ID, "name", m.Name, "its_cluster", m.Cluster)
}

// Foreign returns the members this node, as leader, found carrying another
// cluster's registry (id → that cluster's id, fsm.ClusterCA.ID) and so did
// not add to raft. Safe for concurrent use.
func (c *Consensus) Foreign() map[string]string {
	c.foreignMu.Lock()
	defer c.foreignMu.Unlock()
	return maps.Clone(c.foreign)
}
