package p2p

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

const (
	// ProtocolPing is rbee's round-trip probe: the dialer writes pingSize
	// random bytes, the handler echoes them and closes.
	ProtocolPing protocol.ID = "/rbee/ping/1.0.0"

	// pingSize matches libp2p's ping: large enough that a stale or foreign
	// echo cannot match by chance.
	pingSize = 32

	// pingTimeout bounds one ping on both sides when the caller's context has
	// no earlier deadline; a LAN round trip is milliseconds, so 10 s only
	// trips on a wedged peer.
	pingTimeout = 10 * time.Second
)

// Ping measures one round trip to peer id over ProtocolPing, dialing if
// needed. The duration covers the echo only, not the dial. A ping is
// idempotent, so a failed first attempt (typically a stale connection to a
// peer that just restarted) is retried once on a fresh stream.
func (h *Host) Ping(ctx context.Context, id peer.ID) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	rtt, err := h.pingOnce(ctx, id)
	if err != nil && ctx.Err() == nil && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrNotStarted) {
		h.log.Debug("ping failed, retrying once", "peer", id, "err", err)
		rtt, err = h.pingOnce(ctx, id)
	}
	return rtt, err
}

func (h *Host) pingOnce(ctx context.Context, id peer.ID) (time.Duration, error) {
	s, err := h.NewStream(ctx, id, ProtocolPing)
	if err != nil {
		return 0, err
	}
	rtt, err := ping(ctx, s)
	closeOrReset(s, err)
	if err != nil {
		return 0, fmt.Errorf("p2p: ping %s: %w", id, err)
	}
	return rtt, nil
}

func ping(ctx context.Context, s network.Stream) (time.Duration, error) {
	if dl, ok := ctx.Deadline(); ok {
		if err := s.SetDeadline(dl); err != nil {
			return 0, err
		}
	}
	out := make([]byte, pingSize)
	if _, err := rand.Read(out); err != nil {
		return 0, err
	}
	in := make([]byte, pingSize)
	start := time.Now()
	if _, err := s.Write(out); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(s, in); err != nil {
		return 0, err
	}
	rtt := time.Since(start)
	if !bytes.Equal(in, out) {
		return 0, ErrPingMismatch
	}
	return rtt, nil
}

// handlePing echoes one ping payload.
func (h *Host) handlePing(s network.Stream) {
	err := s.SetDeadline(time.Now().Add(pingTimeout))
	if err == nil {
		buf := make([]byte, pingSize)
		if _, err = io.ReadFull(s, buf); err == nil {
			_, err = s.Write(buf)
		}
	}
	if err != nil {
		h.log.Debug("ping handler", "peer", s.Conn().RemotePeer(), "err", err)
	}
	closeOrReset(s, err)
}
