//go:build unix

package shard

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/engine"
)

// TestStageModelLost: a later stage whose model file is truncated under
// it (a SIGBUS that killed the stage's worker before) fails the pass, the
// head gets an error, and the Server tells OnModelLost, so that the stage's
// worker stops itself instead of failing every later pass.
func TestStageModelLost(t *testing.T) {
	opts := engine.Options{Threads: 1, ContextSize: 128}
	data, err := os.ReadFile(storiesPath)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "m.gguf")
	require.NoError(t, os.WriteFile(path, data, 0o600))
	m, err := engine.LoadShard(path, engine.ShardSpec{Lo: 2, Hi: 5}, opts)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	lost := make(chan error, 16)
	srv, err := NewServer(ServerConfig{Model: m, OnModelLost: func(err error) { lost <- err }})
	require.NoError(t, err)
	st := serveOn(t, srv, "")
	p, err := NewPipeline(PipelineConfig{Stages: []Dialer{TCPDialer(st.addr)}, Lo: 2, Timeout: 10 * time.Second})
	require.NoError(t, err)
	require.NoError(t, p.Start(context.Background()))
	t.Cleanup(func() { p.Close() })
	head, err := engine.LoadShard(storiesPath, engine.ShardSpec{Lo: 0, Hi: 2, Next: p}, opts) // the head's own file stays whole
	require.NoError(t, err)
	t.Cleanup(func() { head.Close() })
	prompt := head.Tokenizer().Encode("Tom and Sue", head.Tokenizer().AddBOS(), true)

	_, err = generate(context.Background(), head.NewSession(), prompt, 4)
	require.NoError(t, err)
	require.Empty(t, lost)
	require.NoError(t, os.Truncate(path, 4096))
	_, err = generate(context.Background(), head.NewSession(), prompt, 4)
	require.Error(t, err)
	select {
	case err := <-lost:
		require.ErrorIs(t, err, engine.ErrFileChanged)
	case <-time.After(10 * time.Second):
		t.Fatal("OnModelLost was not called")
	}
}
