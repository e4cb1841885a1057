package gossip

import (
	"context"
	"math/rand/v2"
	"time"
)

// Settling: push/pull while the membership changes.
//
// memberlist spreads news of a member (its alive message) as a rumour:
// every member that learns it sends it RetransmitMult × ⌈log10(n+1)⌉
// times, n being the members it knows at that moment, and then never
// again. A member joining learns everything else from its seed's state
// (push/pull on join). In a join storm the seed often does not know yet
// of a member that joined a moment earlier, whose rumour, sent while the
// cluster was small, is already spent: the new member then never hears of
// it. Only anti-entropy repairs that, and memberlist stretches its
// push/pull interval with the cluster (30 s × (⌈log2 n⌉ − 4) above 32
// members: 90 s at 100, 180 s at 1,000), which is what made the last
// member of a 100-member simulation count everyone alive after 100 s
// instead of 5 s, and 60 node processes after 102 s.
//
// So while members join, gossip adds push/pulls of its own: a member that
// saw a join (a new member, or one back after a departure) within the
// last settle window exchanges its full state with a random alive member
// every settle interval. Departures do not count: a member that missed a
// death finds it with its own probes. A quiet cluster pays
// nothing; during a join storm a member pays one state exchange (about
// 100 bytes a member, each way) per interval.

// settleTiming is when a member settles in a cluster of n members.
type settleTiming struct {
	// every is the interval between settling push/pulls.
	every time.Duration
	// window is how long after the last join seen here settling goes on.
	window time.Duration
}

// settleBytesPerSec bounds what settling costs a member, about: an
// exchange sends this member's state (about settleStateBytes a member)
// and receives the peer's. 16 KB/s is a few percent of a 100 Mbit/s link
// for the duration of a storm and keeps the interval at 2 s up to 160
// members.
const settleBytesPerSec = 16 << 10

// settleStateBytes is a member's entry in a push/pull state, about:
// name (a 52-character peer id), address, metadata, incarnation,
// versions, msgpack framing, before compression.
const settleStateBytes = 100

// settleFor returns the settle timing for n members under a profile whose
// minimum interval is base: every = max(base, the interval that keeps
// settling under settleBytesPerSec), window = max(minWindow, 3 × every)
// so that a member settles at least three times after the last change it
// saw. base 0 disables settling. exchange is what this member sent in its
// last settling push/pull (0: none yet); the state it sends carries the
// members' metadata and the node's own state (load reports), which can
// be far more than n × settleStateBytes, so the larger of the two counts.
func settleFor(base, minWindow time.Duration, n int, exchange uint64) settleTiming {
	if base <= 0 {
		return settleTiming{}
	}
	state := max(uint64(n*settleStateBytes), exchange)
	every := max(base, time.Duration(2*state)*time.Second/settleBytesPerSec)
	return settleTiming{every: every, window: max(minWindow, 3*every)}
}

// Settle bases per profile. lan: a storm's gaps are repaired within a
// couple of seconds, 15 times faster than memberlist's own push/pull at
// 32 members; the window outlasts a rumour at 1,000 members (16 sends to
// 3 members per 200 ms gossip round, behind the other news queued). local:
// memberlist's push/pull already runs every 2 s, settling keeps pace with
// its 50 ms gossip.
const (
	settleBaseLAN     = 2 * time.Second
	settleWindowLAN   = 30 * time.Second
	settleBaseLocal   = 500 * time.Millisecond
	settleWindowLocal = 5 * time.Second
)

// settleTiming is this member's settle timing now, slowed by
// Config.TimeScale.
func (g *Gossip) settleTiming(exchange uint64) settleTiming {
	st := settleFor(g.settleBase, g.settleWindow, g.NumMembers(), exchange)
	st.every = scaleDuration(st.every, g.timeScale)
	st.window = scaleDuration(st.window, g.timeScale)
	return st
}

// due reports whether a member that last saw a join at lastChange
// settles at now.
func (st settleTiming) due(now, lastChange time.Time) bool {
	return st.every > 0 && now.Sub(lastChange) <= st.window
}

// noteChange records that a member joined now: settling goes on for the
// window from here.
func (g *Gossip) noteChange() { g.lastChange.Store(time.Now().UnixNano()) }

// settle runs until ctx ends: every interval, while the last join seen
// here is recent, one push/pull with a random alive member. It stops
// when the member leaves or closes.
func (g *Gossip) settle(ctx context.Context) {
	defer close(g.settled)
	if g.settleBase <= 0 {
		return
	}
	var exchange uint64 // bytes sent in the last settling push/pull
	for {
		st := g.settleTiming(exchange)
		t := time.NewTimer(rand.N(st.every/2) + st.every*3/4) // ±25 %: members do not settle in step
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if !st.due(time.Now(), time.Unix(0, g.lastChange.Load())) {
			continue
		}
		ml, err := g.member()
		if err != nil {
			return
		}
		// From the member table: memberlist's Members hands out its own
		// nodes, which it updates under a lock we cannot take.
		var peers []string
		for _, m := range g.table.list() {
			if m.ID != g.mlCfg.Name && m.State == StateAlive && m.Addr != "" {
				peers = append(peers, m.Addr)
			}
		}
		if len(peers) == 0 {
			continue
		}
		// What this member sends meanwhile is its push/pull state plus
		// whatever else it gossips in that moment: an upper bound.
		before := g.sent.Load()
		if _, err := ml.Join([]string{peers[rand.IntN(len(peers))]}); err != nil {
			g.log.Debug("settling push/pull failed", "err", err)
			continue
		}
		exchange = g.sent.Load() - before
		g.settles.Add(1)
	}
}
