package p2p

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/stretchr/testify/require"
)

// TestNewStreamFallsBackToOlderVersion: a stream asked for a new protocol
// version with the old one as fallback speaks the new one with a peer that
// has it, the old one with a peer that has only that.
func TestNewStreamFallsBackToOlderVersion(t *testing.T) {
	const v2 protocol.ID = "/rbee/test-echo/2.0.0"
	oldPeer, newPeer, dialer := newHost(t, "s3cret"), newHost(t, "s3cret"), newHost(t, "s3cret")
	for _, h := range []*Host{newPeer, dialer} {
		require.NoError(t, h.AddService(Service{Name: "rbee.test-v2", Protocol: v2, Memory: 64 << 10}))
	}
	answer := func(s network.Stream) {
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		_ = WriteFrame(s, []byte(s.Protocol()))
		_ = s.Close()
	}
	oldPeer.Handle(testProto, answer)
	newPeer.Handle(testProto, answer)
	newPeer.Handle(v2, answer)
	for _, c := range []struct {
		peer *Host
		want protocol.ID
	}{{oldPeer, testProto}, {newPeer, v2}} {
		introduce(t, dialer, c.peer)
		s, err := dialer.NewStream(ctxT(t), c.peer.ID(), v2, testProto)
		require.NoError(t, err)
		require.Equal(t, c.want, s.Protocol())
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		got, err := ReadFrame(s, 0)
		require.NoError(t, err)
		require.Equal(t, string(c.want), string(got), "the peer's handler of that version answered")
		_ = s.Close()
	}
	_, err := dialer.NewStream(ctxT(t), oldPeer.ID(), "/rbee/undeclared/1.0.0", testProto)
	require.ErrorIs(t, err, ErrNoService)
}
