package gossip

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate implements memberlist.Delegate on a Gossip.
type delegate Gossip

var _ memberlist.Delegate = (*delegate)(nil)

// NodeMeta returns the encoded local metadata; it was size-checked when set.
func (d *delegate) NodeMeta(limit int) []byte {
	g := (*Gossip)(d)
	g.mu.RLock()
	defer g.mu.RUnlock()
	if len(g.metaEnc) > limit {
		g.log.Error("metadata over memberlist limit, sending none", "size", len(g.metaEnc), "limit", limit)
		return nil
	}
	return append([]byte(nil), g.metaEnc...)
}

func (d *delegate) NotifyMsg(b []byte) {
	g := (*Gossip)(d)
	if len(b) == 0 {
		return
	}
	switch b[0] {
	case msgUser:
		if g.delegate != nil {
			g.delegate.NotifyMsg(append([]byte(nil), b[1:]...))
		}
	case msgLeaveIntent:
		g.learnIntent(b)
	default:
		g.log.Debug("dropping gossip message of unknown type", "type", b[0], "size", len(b))
	}
}

// learnIntent records a leave intent from the network and passes a new
// one on, so that it reaches every member before the leave itself.
func (g *Gossip) learnIntent(b []byte) {
	id, nonce, ok := decodeIntent(b)
	if !ok {
		g.log.Debug("dropping malformed leave intent", "size", len(b))
		return
	}
	g.mu.RLock()
	own := id == g.mlCfg.Name && !g.left
	g.mu.RUnlock()
	if own {
		return // a stale intent of an earlier run of this node
	}
	fresh, left, m := g.table.intent(id, nonce)
	if !fresh {
		return
	}
	g.queue.QueueBroadcast(&intentBroadcast{id: id, msg: append([]byte(nil), b...)})
	if left {
		(*eventDelegate)(g).emit(EventLeave, m)
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return (*Gossip)(d).queue.GetBroadcasts(overhead, limit)
}

func (d *delegate) LocalState(join bool) []byte {
	g := (*Gossip)(d)
	if g.delegate == nil {
		return nil
	}
	return g.delegate.LocalState()
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	g := (*Gossip)(d)
	if g.delegate == nil || len(buf) == 0 {
		return
	}
	g.delegate.MergeRemoteState(append([]byte(nil), buf...))
}

// eventDelegate implements memberlist.EventDelegate on a Gossip. memberlist
// calls it with its node lock held: it must not call back into memberlist.
type eventDelegate Gossip

var _ memberlist.EventDelegate = (*eventDelegate)(nil)

func (e *eventDelegate) NotifyJoin(n *memberlist.Node) {
	g := (*Gossip)(e)
	g.noteChange()
	e.emit(EventJoin, g.table.join(g.toMember(n.Name, n.Address(), n.Meta)))
}

func (e *eventDelegate) NotifyUpdate(n *memberlist.Node) {
	g := (*Gossip)(e)
	e.emit(EventUpdate, g.table.update(g.toMember(n.Name, n.Address(), n.Meta)))
}

func (e *eventDelegate) NotifyLeave(n *memberlist.Node) {
	g := (*Gossip)(e)
	m := g.table.depart(g.toMember(n.Name, n.Address(), n.Meta))
	if m.State == StateLeft {
		e.emit(EventLeave, m)
		return
	}
	e.emit(EventFailed, m)
}

func (e *eventDelegate) emit(t EventType, m Member) {
	g := (*Gossip)(e)
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return
	}
	select {
	case g.events <- Event{Type: t, Member: m}:
	default:
		g.log.Warn("event buffer full, dropping membership event", "type", t, "node", m.ID)
	}
}

// pingDelegate implements memberlist.PingDelegate on a Gossip: a member
// that answers this node's direct probe is no longer suspect here.
type pingDelegate Gossip

var _ memberlist.PingDelegate = (*pingDelegate)(nil)

// AckPayload adds nothing to acks.
func (p *pingDelegate) AckPayload() []byte { return nil }

func (p *pingDelegate) NotifyPingComplete(n *memberlist.Node, _ time.Duration, _ []byte) {
	g := (*Gossip)(p)
	if g.table.answered(n.Name) {
		g.log.Debug("member no longer suspect", "node", n.Name)
	}
}

// namedBroadcast replaces any queued broadcast with the same name.
type namedBroadcast struct {
	name string
	msg  []byte
}

var _ memberlist.NamedBroadcast = (*namedBroadcast)(nil)

func (b *namedBroadcast) Name() string    { return b.name }
func (b *namedBroadcast) Message() []byte { return b.msg }
func (b *namedBroadcast) Finished()       {}
func (b *namedBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(memberlist.NamedBroadcast)
	return ok && o.Name() == b.name
}

// uniqueBroadcast never replaces another.
type uniqueBroadcast struct{ msg []byte }

var _ memberlist.UniqueBroadcast = (*uniqueBroadcast)(nil)

func (b *uniqueBroadcast) Message() []byte                       { return b.msg }
func (b *uniqueBroadcast) Finished()                             {}
func (b *uniqueBroadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b *uniqueBroadcast) UniqueBroadcast()                      {}
