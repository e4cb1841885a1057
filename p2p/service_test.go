package p2p

import (
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/stretchr/testify/require"
)

const scopedProto protocol.ID = "/rbee/test-scoped/1.0.0"

// serviceStat reads the resource manager's view of service name on h.
func serviceStat(t *testing.T, h *Host, name string) network.ScopeStat {
	t.Helper()
	var st network.ScopeStat
	require.NoError(t, h.Libp2p().Network().ResourceManager().ViewService(name, func(s network.ServiceScope) error {
		st = s.Stat()
		return nil
	}))
	return st
}

func TestStreamsJoinTheirService(t *testing.T) {
	const mem = 12345
	a, b := newHost(t, "s3cret"), newHost(t, "s3cret")
	introduce(t, b, a)
	svc := Service{Name: "rbee.scoped", Protocol: scopedProto, Memory: mem}
	require.NoError(t, a.AddService(svc))
	require.NoError(t, b.AddService(svc))

	inside := make(chan network.ScopeStat, 1)
	release := make(chan struct{})
	a.Handle(scopedProto, func(s network.Stream) {
		inside <- s.Scope().Stat()
		<-release
		_, _ = io.Copy(io.Discard, s)
		_ = s.Close()
	})
	s, err := b.NewStream(ctxT(t), a.ID(), scopedProto)
	require.NoError(t, err)
	require.Equal(t, int64(mem), s.Scope().Stat().Memory, "the dialer reserved the buffers")
	_, err = s.Write([]byte("hello")) // the handler runs once the protocol is negotiated
	require.NoError(t, err)
	got := <-inside
	require.Equal(t, int64(mem), got.Memory, "the handler's stream reserved the buffers")

	in, out := serviceStat(t, a, svc.Name), serviceStat(t, b, svc.Name)
	require.Equal(t, 1, in.NumStreamsInbound)
	require.Equal(t, int64(mem), in.Memory)
	require.Equal(t, 1, out.NumStreamsOutbound)
	require.Equal(t, int64(mem), out.Memory)

	close(release)
	require.NoError(t, s.Close())
	require.Eventually(t, func() bool {
		in, out := serviceStat(t, a, svc.Name), serviceStat(t, b, svc.Name)
		return in.NumStreamsInbound == 0 && in.Memory == 0 && out.NumStreamsOutbound == 0 && out.Memory == 0
	}, 10*time.Second, 10*time.Millisecond, "closing returns the reservations")
}

func TestConnsJoinTheirService(t *testing.T) {
	a, b := newHost(t, "s3cret"), newHost(t, "s3cret")
	introduce(t, b, a)
	svc := Service{Name: "rbee.scoped-conn", Protocol: scopedProto, Memory: 4096}
	require.NoError(t, a.AddService(svc))
	require.NoError(t, b.AddService(svc))
	l := a.Listen(scopedProto)
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c, err := b.Dial(ctxT(t), a.ID(), scopedProto)
	require.NoError(t, err)
	_, err = c.Write([]byte("x"))
	require.NoError(t, err)
	ac := <-accepted
	require.Equal(t, 1, serviceStat(t, a, svc.Name).NumStreamsInbound)
	require.Equal(t, int64(4096), serviceStat(t, b, svc.Name).Memory)
	require.NoError(t, c.Close())
	require.NoError(t, ac.Close())
	require.Eventually(t, func() bool {
		return serviceStat(t, a, svc.Name).Memory == 0 && serviceStat(t, b, svc.Name).Memory == 0
	}, 10*time.Second, 10*time.Millisecond)
}

func TestStreamsWithoutServiceAreRefused(t *testing.T) {
	a, b := newHost(t, "s3cret"), newHost(t, "s3cret")
	introduce(t, b, a)
	const undeclared protocol.ID = "/rbee/test-undeclared/1.0.0"

	_, err := b.NewStream(ctxT(t), a.ID(), undeclared)
	require.ErrorIs(t, err, ErrNoService, "outbound")

	// Inbound: the dialer declared it, the handler's host did not.
	called := make(chan struct{}, 1)
	a.Handle(undeclared, func(s network.Stream) { called <- struct{}{}; _ = s.Close() })
	require.NoError(t, b.AddService(Service{Name: "rbee.undeclared", Protocol: undeclared}))
	s, err := b.NewStream(ctxT(t), a.ID(), undeclared)
	require.NoError(t, err)
	_ = s.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = s.Write([]byte("x"))
	_, err = s.Read(make([]byte, 1))
	require.Error(t, err, "the stream was reset")
	require.NotErrorIs(t, err, io.EOF)
	select {
	case <-called:
		t.Fatal("the handler saw a stream outside the resource manager")
	default:
	}
}

func TestReservationOverTheLimitFails(t *testing.T) {
	a, b := newHost(t, "s3cret"), newHost(t, "s3cret")
	introduce(t, b, a)
	a.Handle(scopedProto, func(s network.Stream) { _ = s.Close() })
	require.NoError(t, a.AddService(Service{Name: "rbee.greedy", Protocol: scopedProto}))
	require.NoError(t, b.AddService(Service{Name: "rbee.greedy", Protocol: scopedProto, Memory: 1 << 40}))
	_, err := b.NewStream(ctxT(t), a.ID(), scopedProto)
	require.ErrorIs(t, err, network.ErrResourceLimitExceeded)
	require.Zero(t, serviceStat(t, b, "rbee.greedy").NumStreamsOutbound, "the stream was reset")
}

func TestAddService(t *testing.T) {
	h := newHost(t, "s3cret")
	tests := []struct {
		name string
		svc  Service
		ok   bool
	}{
		{"valid", Service{Name: "rbee.x", Protocol: "/rbee/x/1.0.0", Memory: 1}, true},
		{"no memory", Service{Name: "rbee.y", Protocol: "/rbee/y/1.0.0"}, true},
		{"no name", Service{Protocol: "/rbee/x/1.0.0"}, false},
		{"no protocol", Service{Name: "rbee.x"}, false},
		{"negative memory", Service{Name: "rbee.x", Protocol: "/rbee/x/1.0.0", Memory: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := h.AddService(tt.svc)
			if !tt.ok {
				require.ErrorIs(t, err, ErrBadService)
				return
			}
			require.NoError(t, err)
			got, ok := h.Service(tt.svc.Protocol)
			require.True(t, ok)
			require.Equal(t, tt.svc.Name, got.Name)
			require.Equal(t, uint8(network.ReservationPriorityAlways), got.Priority, "zero priority means always")
		})
	}
	ping, ok := h.Service(ProtocolPing)
	require.True(t, ok, "ping has its service")
	require.Equal(t, "rbee.ping", ping.Name)
}

// A handler that panics resets its stream; the host (the process) goes on
// serving.
func TestHandlerPanicResetsTheStream(t *testing.T) {
	a, b := newHost(t, "s3cret"), newHost(t, "s3cret")
	introduce(t, b, a)
	svc := Service{Name: "rbee.scoped", Protocol: scopedProto}
	require.NoError(t, a.AddService(svc))
	require.NoError(t, b.AddService(svc))
	var calls atomic.Int32
	a.Handle(scopedProto, func(s network.Stream) {
		if calls.Add(1) == 1 {
			panic("a bug in a handler")
		}
		_, _ = s.Write([]byte("ok"))
		_ = s.Close()
	})
	for i, want := range []string{"", "ok"} {
		s, err := b.NewStream(ctxT(t), a.ID(), scopedProto)
		require.NoError(t, err)
		_, err = s.Write([]byte("hello"))
		require.NoError(t, err)
		got, err := io.ReadAll(s)
		if want == "" {
			require.Error(t, err, "stream %d: reset", i)
		} else {
			require.NoError(t, err)
			require.Equal(t, want, string(got))
		}
	}
}
