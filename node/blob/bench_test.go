package blob_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/fsm"
	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/node/blob"
)

// BenchmarkTransfer copies a 64 MiB file between two libp2p hosts in
// this process, over the direct path and over the libp2p stream, the
// receiver hashing what it reads (as a download does) but writing
// nothing: the transport's cost per byte, both sides together.
//
//	go test -run x -bench Transfer -cpuprofile /tmp/blob.pprof ./node/blob/
func BenchmarkTransfer(b *testing.B) {
	const size = 64 << 20
	mc, err := modelcat.New(modelcat.Config{Dir: b.TempDir()})
	require.NoError(b, err)
	defer mc.Close()
	tmp := filepath.Join(b.TempDir(), "big.gguf")
	// A real GGUF with random bytes after it (the catalog reads the
	// header only).
	head, err := os.ReadFile(filepath.Join("..", "..", "testdata", "model", "stories260K.gguf"))
	require.NoError(b, err)
	data := make([]byte, size)
	_, _ = rand.Read(data)
	copy(data, head)
	require.NoError(b, os.WriteFile(tmp, data, 0o644))
	sum := sha256.Sum256(data)
	sha := hex.EncodeToString(sum[:])
	_, err = mc.Add(tmp, modelcat.NewEntry{ID: "bench--big", FileName: "big.gguf", Source: modelcat.SourceLocal, SHA256: sha})
	require.NoError(b, err)

	for _, direct := range []bool{true, false} {
		name := "stream"
		if direct {
			name = "direct"
		}
		b.Run(name, func(b *testing.B) {
			server, client := newHost(b), newHost(b)
			var l *blob.Listener
			if direct {
				l = listen(b, "127.0.0.1:0")
			}
			served := blob.New(blob.Config{Models: mc, Streams: server, Direct: l})
			server.Handle(blob.Protocol, served.Handle)
			require.NoError(b, client.AddPeer(server.ID(), server.Addrs()))
			reg := holdings{alive: map[string]bool{server.ID().String(): true},
				models: []fsm.ModelHolding{{NodeID: server.ID().String(), SHA256: sha}}}
			fetch := blob.New(blob.Config{Streams: client, Holdings: reg})
			buf := make([]byte, 1<<20)
			b.SetBytes(size)
			b.ResetTimer()
			for range b.N {
				rc, _, err := fetch.ModelSource().OpenRange(context.Background(), sha, 0)
				require.NoError(b, err)
				h := sha256.New()
				n, err := io.CopyBuffer(h, rc, buf)
				require.NoError(b, err)
				require.NoError(b, rc.Close())
				require.Equal(b, int64(size), n)
			}
			if l != nil {
				require.Equal(b, uint64(b.N), l.Claimed(), "every copy took the direct path")
			}
		})
	}
}
