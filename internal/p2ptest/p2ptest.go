// Package p2ptest starts real libp2p hosts on loopback for tests.
package p2ptest

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/p2p"
)

// Host starts a host on a free loopback port with the private-network
// secret and services, closed when the test ends.
func Host(t testing.TB, secret string, services ...p2p.Service) *p2p.Host {
	t.Helper()
	cfg := p2p.DefaultConfig()
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.Secret = []byte(secret)
	h, err := p2p.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = h.Close() })
	for _, s := range services {
		require.NoError(t, h.AddService(s))
	}
	require.NoError(t, h.Start(context.Background()))
	return h
}
