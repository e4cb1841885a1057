package gossip

import (
	"context"
	"time"
)

// Rechecking suspects.
//
// A member is suspect here when this node's own probe of it failed (see
// members.go) and stays suspect until it answers a direct probe again or
// sends a newer alive message carrying new metadata. A member refuting a
// suspicion sends an alive message with a higher incarnation but the same
// metadata, for which memberlist calls no delegate; and memberlist probes
// the members in turn, one per ProbeInterval, so its next probe of that
// member comes about n seconds later (a minute at 60 members). On a loaded
// machine, where probes time out now and then, members then stayed
// suspect here for a minute or more: a 60-node cluster on one 2-core
// machine took 99 s until every node counted all alive, although every
// suspicion was refuted within a second or two.
//
// So gossip probes its suspects itself, each ProbeInterval, with
// memberlist's direct ping: an answer ends the suspicion here as
// memberlist's own probe would. Nothing is sent while no member is
// suspect.

// recheckSuspects runs until ctx ends or the member leaves: every probe
// interval it pings each member suspect here, one at a time.
func (g *Gossip) recheckSuspects(ctx context.Context) {
	t := time.NewTicker(g.mlCfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := g.recheckOnce(ctx); err != nil {
			return
		}
	}
}

// recheckOnce pings each member suspect here and returns how many
// answered (and are alive here again); an error when the member is not
// running.
func (g *Gossip) recheckOnce(ctx context.Context) (int, error) {
	ml, err := g.member()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, m := range g.table.suspects() {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		if _, err := ml.Ping(m.ID, memberAddr(m.Addr)); err == nil && g.table.answered(m.ID) {
			n++
			g.log.Debug("member no longer suspect (rechecked)", "node", m.ID)
		}
	}
	return n, nil
}

// memberAddr is a member's gossip address as memberlist's Ping takes it
// (it only uses String).
type memberAddr string

func (a memberAddr) Network() string { return "udp" }
func (a memberAddr) String() string  { return string(a) }
