package gossip

import (
	"log"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/stretchr/testify/require"
)

// TestShutdownWithStreamsInHandOver: streams accepted while nobody reads
// them (memberlist already stopped) do not keep Shutdown waiting.
func TestShutdownWithStreamsInHandOver(t *testing.T) {
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, BindPort: 0,
		Logger: log.New(discard{}, "", 0)})
	require.NoError(t, err)
	var sent atomic.Uint64
	ct := newCountingTransport(nt, &sent)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(nt.GetAutoBindPort()))
	for range 3 { // one waits in the relay, one in memberlist's listener
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
	}
	done := make(chan error, 1)
	go func() { done <- ct.Shutdown() }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
