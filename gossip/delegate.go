package gossip

import (
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
	default:
		g.log.Debug("dropping gossip message of unknown type", "type", b[0], "size", len(b))
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

func (e *eventDelegate) NotifyJoin(n *memberlist.Node) { e.emit(EventJoin, n, memberlist.StateAlive) }

func (e *eventDelegate) NotifyUpdate(n *memberlist.Node) {
	e.emit(EventUpdate, n, memberlist.StateAlive)
}

func (e *eventDelegate) NotifyLeave(n *memberlist.Node) {
	g := (*Gossip)(e)
	st := memberlist.StateDead
	if g.states != nil {
		st = g.states.stateOf(n)
	}
	if st == memberlist.StateLeft {
		e.emit(EventLeave, n, st)
		return
	}
	e.emit(EventFailed, n, memberlist.StateDead)
}

func (e *eventDelegate) emit(t EventType, n *memberlist.Node, st memberlist.NodeStateType) {
	g := (*Gossip)(e)
	ev := Event{Type: t, Member: g.toMember(n.Name, n.Address(), n.Meta, st)}
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return
	}
	select {
	case g.events <- ev:
	default:
		g.log.Warn("event buffer full, dropping membership event", "type", t, "node", n.Name)
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
