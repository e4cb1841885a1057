//go:build unix

package node_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/nodetest"
)

// A file of the data dir replaced by a FIFO (or another non-file) is an
// error naming it at start, or for peers.json a warning: opening a FIFO
// for reading waits for a writer, and the node hung before it listened,
// deaf to SIGTERM.
func TestStartWithFIFOInDataDir(t *testing.T) {
	for _, tc := range []struct {
		file  string
		fails bool
	}{
		{"node.key", true},
		{"admin.key", false}, // rewritten from the secret
		{"models/index.json", true},
		{"workers/index.json", true},
		{"processes/processes.json", true},
		{"peers.json", false},
	} {
		t.Run(tc.file, func(t *testing.T) {
			c := nodetest.New(t, 1)
			dir := c.Nodes[0].DataDir()
			c.Kill(0)
			path := filepath.Join(dir, filepath.FromSlash(tc.file))
			require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o700))
			require.NoError(t, os.RemoveAll(path))
			require.NoError(t, syscall.Mkfifo(path, 0o600))
			t.Cleanup(func() {
				// Unblock a reader a failing build left waiting.
				if f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					f.Close()
				}
			})

			cfg := node.DefaultConfig()
			cfg.Name, cfg.DataDir, cfg.MDNS, cfg.Profile = "again", dir, false, "local"
			cfg.HTTPAddr, cfg.GossipAddr, cfg.P2PAddr, cfg.BlobAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
			again, err := node.New(cfg)
			require.NoError(t, err)
			t.Cleanup(func() { _ = again.Close() })
			done := make(chan error, 1)
			go func() { done <- again.Start(context.Background()) }()
			var startErr error
			require.Eventually(t, func() bool {
				select {
				case startErr = <-done:
					return true
				default:
					return false
				}
			}, 20*time.Second, 20*time.Millisecond, "Start hangs on the FIFO %s", tc.file)
			if !tc.fails {
				require.NoError(t, startErr)
				return
			}
			require.Error(t, startErr)
			require.ErrorContains(t, startErr, path)
			require.ErrorContains(t, startErr, "not a regular file")
		})
	}
}
