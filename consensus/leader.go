package consensus

import (
	"context"
	"errors"
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

func (c *Consensus) markLeaving(id string) {
	c.leftMu.Lock()
	defer c.leftMu.Unlock()
	now := time.Now()
	for k, t := range c.left {
		if now.Sub(t) > leavingGrace {
			delete(c.left, k)
		}
	}
	c.left[id] = now
}

func (c *Consensus) isLeaving(id string) bool {
	c.leftMu.Lock()
	defer c.leftMu.Unlock()
	t, ok := c.left[id]
	return ok && time.Since(t) <= leavingGrace
}

// leaderLoop runs while this server is the leader: a barrier (so the local
// FSM has every committed entry), then a reconcile pass at once, on every
// membership kick and every ReconcileInterval.
func (c *Consensus) leaderLoop(ctx context.Context) {
	r, err := c.running()
	if err != nil {
		return
	}
	backoff := 50 * time.Millisecond
	for {
		err := r.Barrier(c.cfg.ApplyTimeout).Error()
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
	for {
		if err := c.reconcile(ctx, r, absent); err != nil && ctx.Err() == nil {
			c.log.Warn("reconcile failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-c.kickLeader:
		case <-ticker.C:
		}
	}
}

// reconcile makes the raft configuration and the registry's node entries
// match the gossip view. Only differences are written.
func (c *Consensus) reconcile(ctx context.Context, r *raft.Raft, absent map[string]time.Time) error {
	if r.State() != raft.Leader {
		return ErrNotLeader
	}
	members := map[string]Member{}
	var ids []string
	for _, m := range c.cfg.Members() {
		if m.ID == "" {
			continue
		}
		if _, dup := members[m.ID]; !dup {
			ids = append(ids, m.ID)
		}
		members[m.ID] = m
	}
	sort.Strings(ids)

	cf := r.GetConfiguration()
	if err := cf.Error(); err != nil {
		return err
	}
	servers := map[string]raft.Server{}
	voters := 0
	for _, s := range cf.Configuration().Servers {
		servers[string(s.ID)] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	st := c.cfg.FSM.State()
	now := time.Now().UTC()

	var errs []error
	for _, id := range ids {
		m := members[id]
		srv, inConfig := servers[id]
		switch m.State {
		case MemberAlive:
			if id != c.cfg.LocalID && !c.isLeaving(id) {
				if !inConfig || srv.Address != raft.ServerAddress(id) {
					add, suffrage := r.AddNonvoter, raft.Nonvoter
					if voters < c.cfg.MaxVoters || (inConfig && srv.Suffrage == raft.Voter) {
						add, suffrage = r.AddVoter, raft.Voter
					}
					c.log.Info("adding server", "id", id, "name", m.Name, "as", suffrage.String())
					if err := add(raft.ServerID(id), raft.ServerAddress(id), 0, c.cfg.ApplyTimeout).Error(); err != nil {
						errs = append(errs, err)
						continue
					}
					if suffrage == raft.Voter && !inConfig {
						voters++
					}
					servers[id] = raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(id), Suffrage: suffrage}
				}
			}
			errs = append(errs, c.ensureNode(ctx, r, st, m, fsm.NodeAlive, now))
		case MemberSuspect:
			// Transient: keep raft as it is; make sure the node is known.
			if _, ok := st.Node(id); !ok {
				errs = append(errs, c.ensureNode(ctx, r, st, m, fsm.NodeAlive, now))
			}
		case MemberFailed:
			// Kept in raft (it may come back) until reaped.
			errs = append(errs, c.ensureNode(ctx, r, st, m, fsm.NodeFailed, now))
		case MemberLeft:
			if inConfig && id != c.cfg.LocalID {
				c.log.Info("removing left server", "id", id, "name", m.Name)
				if err := r.RemoveServer(raft.ServerID(id), 0, c.cfg.ApplyTimeout).Error(); err != nil {
					errs = append(errs, err)
				} else if srv.Suffrage == raft.Voter {
					voters--
				}
				delete(servers, id)
			}
			if n, ok := st.Node(id); ok && n.State != fsm.NodeLeft {
				errs = append(errs, c.propose(ctx, r, fsm.SetNodeState{ID: id, State: fsm.NodeLeft, At: now}))
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}

	// Reap: members gossip no longer knows about. Only when gossip knows
	// this server itself (the view is not an empty startup list), and only
	// after the node has been absent for ReapGrace in this leader's eyes, so
	// that a gossip view that has not converged yet cannot shrink the
	// cluster.
	if _, selfSeen := members[c.cfg.LocalID]; selfSeen {
		stillAbsent := map[string]bool{}
		for _, n := range st.Nodes() {
			if _, ok := members[n.ID]; ok || n.ID == c.cfg.LocalID {
				continue
			}
			stillAbsent[n.ID] = true
			first, seen := absent[n.ID]
			if !seen {
				first = time.Now()
				absent[n.ID] = first
			}
			if n.State == fsm.NodeAlive {
				// Vanished without a failure seen by gossip: mark it failed.
				errs = append(errs, c.propose(ctx, r, fsm.SetNodeState{ID: n.ID, State: fsm.NodeFailed, At: now}))
			}
			if wait := c.cfg.ReapGrace - time.Since(first); wait > 0 {
				time.AfterFunc(wait, c.kickLeaderLoop)
				continue
			}
			if srv, ok := servers[n.ID]; ok {
				c.log.Info("reaping server", "id", n.ID, "name", n.Name)
				if err := r.RemoveServer(raft.ServerID(n.ID), 0, c.cfg.ApplyTimeout).Error(); err != nil {
					errs = append(errs, err)
					continue
				}
				if srv.Suffrage == raft.Voter {
					voters--
				}
				delete(servers, n.ID)
			}
			errs = append(errs, c.propose(ctx, r, fsm.DeleteNode{ID: n.ID}))
		}
		for id := range absent {
			if !stillAbsent[id] {
				delete(absent, id)
			}
		}
	}

	// Promote alive non-voters while there is room.
	var nonvoters []string
	for id, s := range servers {
		if s.Suffrage != raft.Voter {
			if m, ok := members[id]; ok && m.State == MemberAlive {
				nonvoters = append(nonvoters, id)
			}
		}
	}
	sort.Strings(nonvoters)
	for _, id := range nonvoters {
		if voters >= c.cfg.MaxVoters {
			break
		}
		c.log.Info("promoting non-voter", "id", id)
		if err := r.AddVoter(raft.ServerID(id), raft.ServerAddress(id), 0, c.cfg.ApplyTimeout).Error(); err != nil {
			errs = append(errs, err)
			continue
		}
		voters++
	}
	return errors.Join(errs...)
}

// ensureNode writes the member's node entry if it differs from the registry.
func (c *Consensus) ensureNode(ctx context.Context, r *raft.Raft, st *fsm.State, m Member, state fsm.NodeState, now time.Time) error {
	want := fsm.Node{
		ID: m.ID, Name: m.Name, HTTPAddr: m.HTTPAddr, HTTPSAddr: m.HTTPSAddr, GossipAddr: m.GossipAddr,
		P2PAddrs: m.P2PAddrs, Version: m.Version, State: state,
	}
	if len(want.P2PAddrs) == 0 {
		want.P2PAddrs = nil
	}
	old, ok := st.Node(m.ID)
	if ok {
		got := fsm.Node{
			ID: old.ID, Name: old.Name, HTTPAddr: old.HTTPAddr, HTTPSAddr: old.HTTPSAddr, GossipAddr: old.GossipAddr,
			P2PAddrs: old.P2PAddrs, Version: old.Version, State: old.State,
		}
		if reflect.DeepEqual(got, want) {
			return nil
		}
		if old.State != state && reflect.DeepEqual(withState(got, state), want) {
			return c.propose(ctx, r, fsm.SetNodeState{ID: m.ID, State: state, At: now})
		}
	}
	want.UpdatedAt = now
	return c.propose(ctx, r, fsm.UpsertNode{Node: want})
}

func withState(n fsm.Node, s fsm.NodeState) fsm.Node {
	n.State = s
	return n
}

// propose applies a command from the leader loop.
func (c *Consensus) propose(ctx context.Context, r *raft.Raft, cmd fsm.Command) error {
	b, err := fsm.Encode(cmd)
	if err != nil {
		return err
	}
	_, err = c.applyLocal(r, ctx, b)
	return err
}
