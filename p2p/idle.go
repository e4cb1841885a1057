package p2p

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// DefaultIdleConnTimeout is Config.IdleConnTimeout's default. A connection
// holds about 80 KB and four goroutines (yamux's loops, its RTT probe) on
// each side, while dialling one again costs a handshake of a few
// milliseconds on a LAN. At 100 nodes the leader of a cluster otherwise
// kept a connection to every node that had once asked it something: 95
// replicas that fed from it while it was the only voter, and every node
// that forwarded a write, about 8 MB of its 44.
const DefaultIdleConnTimeout = 30 * time.Second

// idleConns closes connections that carried no stream for a while, except
// those to protected peers. Idleness is sampled (no stream open at two
// checks a timeout apart): a connection whose short streams all fall
// between the checks is closed too, and its next stream dials again; a
// stream opened in the instant between the last look and the close is
// reset, which its caller sees as a failed stream. Safe for concurrent use.
type idleConns struct {
	mu        sync.Mutex
	protected map[peer.ID]map[string]struct{}
	idleSince map[network.Conn]time.Time
}

// Protect keeps the connections to peer id open while idle, under tag,
// until Unprotect removes the last of its tags (the node protects the raft
// voters: a new leader's first heartbeat should not wait for a dial).
func (h *Host) Protect(id peer.ID, tag string) {
	h.idle.mu.Lock()
	defer h.idle.mu.Unlock()
	if h.idle.protected == nil {
		h.idle.protected = map[peer.ID]map[string]struct{}{}
	}
	if h.idle.protected[id] == nil {
		h.idle.protected[id] = map[string]struct{}{}
	}
	h.idle.protected[id][tag] = struct{}{}
}

// Unprotect removes tag from peer id (see Protect).
func (h *Host) Unprotect(id peer.ID, tag string) {
	h.idle.mu.Lock()
	defer h.idle.mu.Unlock()
	delete(h.idle.protected[id], tag)
	if len(h.idle.protected[id]) == 0 {
		delete(h.idle.protected, id)
	}
}

// Protected returns the peers protected under tag.
func (h *Host) Protected(tag string) []peer.ID {
	h.idle.mu.Lock()
	defer h.idle.mu.Unlock()
	var out []peer.ID
	for id, tags := range h.idle.protected {
		if _, ok := tags[tag]; ok {
			out = append(out, id)
		}
	}
	return out
}

// reapIdle closes, every timeout/2, the connections that had no stream at
// checks at least timeout apart, until ctx ends.
func (h *Host) reapIdle(ctx context.Context, timeout time.Duration) {
	t := time.NewTicker(timeout / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			h.closeIdle(now, timeout)
		}
	}
}

// closeIdle is one check of reapIdle at now.
func (h *Host) closeIdle(now time.Time, timeout time.Duration) {
	conns := h.h.Network().Conns()
	h.idle.mu.Lock()
	if h.idle.idleSince == nil {
		h.idle.idleSince = map[network.Conn]time.Time{}
	}
	live := make(map[network.Conn]bool, len(conns))
	var closing []network.Conn
	for _, c := range conns {
		live[c] = true
		if len(c.GetStreams()) > 0 || len(h.idle.protected[c.RemotePeer()]) > 0 {
			delete(h.idle.idleSince, c)
			continue
		}
		since, seen := h.idle.idleSince[c]
		switch {
		case !seen:
			h.idle.idleSince[c] = now
		case now.Sub(since) >= timeout:
			closing = append(closing, c)
			delete(h.idle.idleSince, c)
		}
	}
	for c := range h.idle.idleSince {
		if !live[c] {
			delete(h.idle.idleSince, c)
		}
	}
	h.idle.mu.Unlock()
	for _, c := range closing {
		if len(c.GetStreams()) > 0 {
			continue // a stream opened since the check: not idle
		}
		h.log.Debug("closing idle connection", "peer", c.RemotePeer())
		_ = c.Close()
	}
}
