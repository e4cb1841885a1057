package consensus

import (
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/raft"
)

// bootstrapLoop implements BootstrapExpect N: wait until Members() shows
// at least N alive members announcing the same N (this server among them),
// make sure none of them already belongs to a cluster, then bootstrap with
// all of them as voters, sorted by id. Every member computes the same
// configuration from the same view, so concurrent bootstraps agree. A
// member announcing a different non-zero expect blocks bootstrapping
// (state "conflict") until it is gone.
func (c *Consensus) bootstrapLoop() {
	defer c.wg.Done()
	ticker := time.NewTicker(c.tm.bootstrapPoll)
	defer ticker.Stop()
	for {
		if done := c.tryBootstrap(); done {
			return
		}
		select {
		case <-c.ctx.Done():
			return
		case <-c.kickBoot:
		case <-ticker.C:
		}
	}
}

// tryBootstrap makes one attempt; it returns true when no further attempt
// is needed.
func (c *Consensus) tryBootstrap() bool {
	r, err := c.running()
	if err != nil {
		return true
	}
	if r.LastIndex() > 0 {
		// A leader added this server before it bootstrapped.
		c.bootstrap.Store(BootstrapJoinedExisting)
		c.log.Info("bootstrap: already part of a cluster")
		return true
	}
	expect := c.cfg.BootstrapExpect
	var peers []Member
	self := false
	for _, m := range c.cfg.Members() {
		if m.State != MemberAlive || m.ID == "" {
			continue
		}
		if m.BootstrapExpect != 0 && m.BootstrapExpect != expect {
			c.bootstrap.Store(BootstrapConflict)
			c.log.Error("bootstrap: member expects a different cluster size; all servers must use the same --bootstrap-expect",
				"member", m.ID, "name", m.Name, "theirs", m.BootstrapExpect, "ours", expect)
			return false
		}
		if m.BootstrapExpect != expect {
			continue // a plain joiner; it will be added by the leader
		}
		if m.ID == c.cfg.LocalID {
			self = true
		}
		peers = append(peers, m)
	}
	c.bootstrap.Store(BootstrapWaiting)
	if len(peers) < expect || !self {
		return false
	}
	sort.Slice(peers, func(i, j int) bool { return peers[i].ID < peers[j].ID })
	// Never bootstrap next to an existing cluster: ask every peer.
	for _, p := range peers {
		if p.ID == c.cfg.LocalID {
			continue
		}
		st, err := c.queryStatus(c.ctx, p.ID)
		if err != nil {
			c.log.Debug("bootstrap: peer not ready", "peer", p.ID, "err", err)
			return false
		}
		if st.HasState {
			c.bootstrap.Store(BootstrapJoinedExisting)
			c.log.Info("bootstrap: a peer already has raft state; waiting to be added", "peer", p.ID)
			return true
		}
	}
	var servers []raft.Server
	seen := map[string]bool{}
	for _, p := range peers {
		if seen[p.ID] {
			continue
		}
		seen[p.ID] = true
		servers = append(servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.ID), Suffrage: raft.Voter})
	}
	err = r.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
	if err != nil && err != raft.ErrCantBootstrap {
		c.log.Error("bootstrap failed", "err", err)
		return false
	}
	c.bootstrap.Store(BootstrapDone)
	c.log.Info("bootstrapped cluster", "servers", fmt.Sprint(seen))
	return true
}
