package shard

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestStatsDoNotWaitForAPass: a pass that waits on a shard that never
// answers holds the group's lock; Stats (which the head's heartbeat reads)
// still answers at once, so the head is not taken for the hung one.
func TestStatsDoNotWaitForAPass(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c) }() // reads, never answers
		}
	}()
	dial := TCPDialer(ln.Addr().String())
	tg, err := NewTensorGroup(TensorGroupConfig{Members: []Dialer{dial}, KVHi: 1, Timeout: 30 * time.Second})
	require.NoError(t, err)
	defer tg.Close()
	pl, err := NewPipeline(PipelineConfig{Stages: []Dialer{dial}, Lo: 1, Timeout: 30 * time.Second})
	require.NoError(t, err)
	defer pl.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for name, g := range map[string]struct {
		start func(context.Context) error
		stats func() Stats
		mu    *sync.Mutex
	}{"tensor": {tg.Start, tg.Stats, &tg.mu}, "pipeline": {pl.Start, pl.Stats, &pl.mu}} {
		started := make(chan error, 1)
		go func() { started <- g.start(ctx) }() // hangs in the handshake, lock held
		require.Eventually(t, func() bool {
			if g.mu.TryLock() {
				g.mu.Unlock()
				return false
			}
			return true
		}, 5*time.Second, time.Millisecond, "%s: Start holds the group's lock", name)
		select {
		case err := <-started:
			t.Fatalf("%s: Start returned %v; the stage should hang it", name, err)
		default:
		}
		got := make(chan Stats, 1)
		go func() { got <- g.stats() }()
		select {
		case <-got:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Stats waited for the hung pass", name)
		}
	}
	cancel()
}
