package node

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/gossip"
)

// Reconnect timings. A member that is down or across a partition is tried
// again after reconnectMinBackoff, doubling up to reconnectMaxBackoff, and
// never given up on (serf reconnects failed members every 30 s for days;
// Consul's retry-join has no end either). Only a graceful leave ends it.
const (
	reconnectTick       = time.Second      // how often the loop looks for members to try
	reconnectMinBackoff = time.Second      // a member that just failed is tried quickly: it may be restarting
	reconnectMaxBackoff = 30 * time.Second // serf's reconnect interval: cheap for a member gone for good
	reconnectTimeout    = 5 * time.Second  // one join attempt (memberlist's TCP push/pull)
)

// refreshReconnect learns and forgets targets from gossip's members and
// the registry's nodes, and returns the ids gossip sees alive or suspect
// and their addresses (this node's address included). It reads them only
// when gossip's member list or the registry's nodes changed since the
// last read: the loop runs every second on every node. Reconnect loop
// only.
func (n *Node) refreshReconnect() (up, upAt map[string]bool) {
	r := n.reconn
	mv, rv := n.gsp.Version(), n.reg.State().NodesChanged()
	if r.refreshed && mv == r.membersAt && rv == r.regAt {
		return r.up, r.upAt
	}
	self := n.ID()
	up, upAt = map[string]bool{}, map[string]bool{}
	for _, m := range n.gsp.Members() {
		if m.ID == self {
			upAt[m.Addr] = true
			continue
		}
		switch m.State {
		case gossip.StateLeft:
			r.forget(m.ID) // a graceful leave: not retried
			continue
		case gossip.StateAlive, gossip.StateSuspect:
			up[m.ID], upAt[m.Addr] = true, true
			r.reachable(m.ID)
		}
		r.learn(m.ID, m.Addr)
	}
	n.reg.State().RangeNodes(func(rn fsm.Node) bool {
		switch {
		case rn.ID == self:
		case rn.State == fsm.NodeLeft:
			r.forget(rn.ID)
		case !up[rn.ID]:
			if _, known := n.gsp.Member(rn.ID); !known {
				r.learn(rn.ID, rn.GossipAddr)
			}
		}
		return true
	})
	r.refreshed, r.membersAt, r.regAt, r.up, r.upAt = true, mv, rv, up, upAt
	return up, upAt
}

// reconnectTarget is one member this node knew and tries to reach again
// while gossip does not see it alive.
type reconnectTarget struct {
	addr    string
	attempt int
	next    time.Time
}

// reconnector remembers the gossip addresses of every member this node
// has known (gossip members, registry node entries, peers.json), by id
// (or "addr:<address>" for a peers.json entry of unknown id), and forgets
// one only when it left gracefully. memberlist itself forgets a dead
// member after a while and never contacts it again, so without this two
// sides of a long partition stay apart once the network is back.
type reconnector struct {
	mu      sync.Mutex
	targets map[string]*reconnectTarget

	// What the last refresh saw (reconnect loop only): the versions of
	// gossip's member list and of the registry's nodes it read, whether it read
	// any, and the ids and addresses gossip saw up. A tick whose versions
	// have not moved reuses them instead of copying every member.
	refreshed        bool
	membersAt, regAt uint64
	up, upAt         map[string]bool
}

func newReconnector() *reconnector {
	return &reconnector{targets: map[string]*reconnectTarget{}}
}

// reconnectLoop runs the reconnector until the node stops.
func (n *Node) reconnectLoop() {
	defer n.wg.Done()
	for _, a := range n.loadPeers() {
		n.reconn.learn("addr:"+a, a)
	}
	t := time.NewTicker(reconnectTick)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
			n.reconnectOnce(time.Now())
		}
	}
}

// learn records (or updates) a target's address.
func (r *reconnector) learn(key, addr string) {
	if addr == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.targets[key]; ok {
		if t.addr != addr {
			t.addr, t.attempt, t.next = addr, 0, time.Time{}
		}
		return
	}
	r.targets[key] = &reconnectTarget{addr: addr}
	if key != "addr:"+addr {
		delete(r.targets, "addr:"+addr) // the peers.json entry now has a name
	}
}

func (r *reconnector) forget(key string) {
	r.mu.Lock()
	delete(r.targets, key)
	r.mu.Unlock()
}

// reachable resets a target's backoff: gossip sees it.
func (r *reconnector) reachable(key string) {
	r.mu.Lock()
	if t, ok := r.targets[key]; ok {
		t.attempt, t.next = 0, time.Time{}
	}
	r.mu.Unlock()
}

// due returns the targets to try now and schedules their next attempt.
func (r *reconnector) due(now time.Time, skip func(key, addr string) bool) map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]string{}
	for key, t := range r.targets {
		if skip(key, t.addr) || now.Before(t.next) {
			continue
		}
		out[key] = t.addr
		t.next = now.Add(min(reconnectMinBackoff<<min(t.attempt, 5), reconnectMaxBackoff))
		t.attempt++
	}
	return out
}

// reconnectOnce refreshes the targets from gossip and the registry when
// either changed, then tries every due one that gossip does not see
// alive.
func (n *Node) reconnectOnce(now time.Time) {
	up, upAt := n.refreshReconnect()
	due := n.reconn.due(now, func(key, addr string) bool { return up[key] || upAt[addr] })
	if len(due) == 0 {
		return
	}
	keys := make([]string, 0, len(due))
	for k := range due {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ctx, cancel := context.WithTimeout(n.ctx, reconnectTimeout)
		cnt, err := n.gsp.Join(ctx, []string{due[k]})
		cancel()
		if err == nil && cnt > 0 {
			n.log.Info("reconnected to a known member", "member", k, "addr", due[k])
			n.reconn.reachable(k)
		} else {
			n.log.Debug("reconnect failed", "member", k, "addr", due[k], "err", err)
		}
	}
}
