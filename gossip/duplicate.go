package gossip

import (
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"
)

// duplicateTries is how often a member seen at another address under this
// node's id is pinged before the conflict is taken for stale state: a
// node that came back under a new address hears of its old one from its
// peers, and nothing answers there.
const duplicateTries = 3

// duplicateWindow is how long after its first Join a member checks a
// conflict over its own id, in probe intervals (10 s on a LAN). The member
// that joins is the newcomer: a member already in the cluster hears of
// the conflict too (the newcomer's alive messages) and must not give way.
// Two copies that join within the window both stop.
const duplicateWindow = 10

// conflictDelegate is memberlist's ConflictDelegate: memberlist calls it
// (with its node lock held) when an alive message names a known member
// at another address. Only a conflict over this node's own id matters
// here; it is checked in a goroutine of its own.
type conflictDelegate Gossip

func (d *conflictDelegate) NotifyConflict(existing, other *memberlist.Node) {
	g := (*Gossip)(d)
	if g.onDuplicate == nil || existing.Name != g.mlCfg.Name || other.Name != g.mlCfg.Name {
		return
	}
	joined := g.firstJoin.Load()
	if joined == 0 || time.Since(time.Unix(0, joined)) > duplicateWindow*g.mlCfg.ProbeInterval {
		return // not a newcomer
	}
	if !g.dupCheck.CompareAndSwap(false, true) {
		return // a check runs, or found one already
	}
	go g.checkDuplicate(other.Address())
}

// checkDuplicate pings this node's own id at addr: only a member running
// with this node's name answers there. On an answer it reports the
// duplicate (once, for good); else a later conflict may check again.
func (g *Gossip) checkDuplicate(addr string) {
	g.mu.RLock()
	ctx := g.loopCtx
	g.mu.RUnlock()
	for range duplicateTries {
		ml, err := g.member()
		if err != nil || ctx == nil {
			break
		}
		if _, err := ml.Ping(g.mlCfg.Name, memberAddr(addr)); err == nil {
			err := fmt.Errorf("%w: a member at %s answers as %s, and the cluster keeps the one it knew", ErrDuplicateIdentity, addr, g.mlCfg.Name)
			g.log.Error("another member runs with this node's identity", "addr", addr, "node", g.mlCfg.Name)
			g.onDuplicate(err)
			return
		}
		select {
		case <-ctx.Done():
			g.dupCheck.Store(false)
			return
		case <-time.After(g.mlCfg.ProbeInterval):
		}
	}
	g.dupCheck.Store(false)
}
