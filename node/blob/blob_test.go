package blob_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/internal/p2ptest"
	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/node/blob"
	"github.com/rbee-project/rbee/p2p"
	workercat "github.com/rbee-project/rbee/worker/catalog"
)

// holdings is a registry as the service reads it.
type holdings struct {
	alive  map[string]bool
	models []fsm.ModelHolding
}

func (h holdings) AlivePeers() map[string]bool   { return h.alive }
func (h holdings) Models() []fsm.ModelHolding    { return h.models }
func (h holdings) Binaries() []fsm.BinaryHolding { return nil }

func newHost(t testing.TB) *p2p.Host {
	return p2ptest.Host(t, "blob-test-secret", p2p.Service{Name: "rbee.blob", Protocol: blob.Protocol, Memory: blob.Chunk})
}

func catalogs(t testing.TB) (*modelcat.Catalog, *workercat.Catalog) {
	mc, err := modelcat.New(modelcat.Config{Dir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = mc.Close() })
	wc := workercat.DefaultConfig()
	wc.Dir = t.TempDir()
	bc, err := workercat.New(wc)
	require.NoError(t, err)
	return mc, bc
}

// TestCopyBetweenPeers: a model held by one real libp2p host is read by
// another, whole and from an offset, through ModelSource; what no peer
// holds, or a bad offset, fails with the server's reason.
func TestCopyBetweenPeers(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "testdata", "model", "stories260K.gguf"))
	require.NoError(t, err)
	sum := sha256.Sum256(src)
	sha := hex.EncodeToString(sum[:])

	mc, bc := catalogs(t)
	tmp := filepath.Join(t.TempDir(), "m.gguf")
	require.NoError(t, os.WriteFile(tmp, src, 0o644))
	_, err = mc.Add(tmp, modelcat.NewEntry{ID: "test--stories260k", FileName: "stories260K.gguf", Source: modelcat.SourceLocal})
	require.NoError(t, err)

	server, client := newHost(t), newHost(t)
	served := blob.New(blob.Config{Models: mc, Binaries: bc, Streams: server})
	server.Handle(blob.Protocol, served.Handle)
	require.NoError(t, client.AddPeer(server.ID(), server.Addrs()))

	cmc, cbc := catalogs(t)
	reg := holdings{alive: map[string]bool{server.ID().String(): true},
		models: []fsm.ModelHolding{{NodeID: server.ID().String(), ModelID: "test--stories260k", SHA256: sha}}}
	fetch := blob.New(blob.Config{Models: cmc, Binaries: cbc, Streams: client, Holdings: reg})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	readRanges(ctx, t, fetch, sha, src, 0, 1000, int64(len(src)))

	_, _, err = fetch.ModelSource().OpenRange(ctx, sha, int64(len(src))+1)
	require.ErrorContains(t, err, "offset out of range")
	_, _, err = fetch.ModelSource().OpenRange(ctx, "00"+sha[2:], 0)
	require.ErrorContains(t, err, "no peer holds")

	// The registry names a holder, but the peer does not have the file.
	wrong := holdings{alive: reg.alive, models: []fsm.ModelHolding{{NodeID: server.ID().String(), SHA256: "11" + sha[2:]}}}
	_, _, err = blob.New(blob.Config{Streams: client, Holdings: wrong}).ModelSource().OpenRange(ctx, "11"+sha[2:], 0)
	require.Error(t, err)

	// A holder gossip does not see alive is not asked.
	dead := holdings{alive: map[string]bool{}, models: reg.models}
	_, _, err = blob.New(blob.Config{Streams: client, Holdings: dead}).ModelSource().OpenRange(ctx, sha, 0)
	require.ErrorContains(t, err, "no peer holds")

	_, _, err = fetch.Open(ctx, server.ID().String(), blob.Request{Kind: "other"})
	require.ErrorContains(t, err, "unknown kind")
	_, err = fetch.BinarySource().Open(ctx, "cpu", "v1", "", "")
	require.ErrorContains(t, err, "no peer holds")
}

// servedModel is a catalog holding stories260K and its sha256.
func servedModel(t *testing.T) (*modelcat.Catalog, *workercat.Catalog, []byte, string) {
	src, err := os.ReadFile(filepath.Join("..", "..", "testdata", "model", "stories260K.gguf"))
	require.NoError(t, err)
	sum := sha256.Sum256(src)
	mc, bc := catalogs(t)
	tmp := filepath.Join(t.TempDir(), "m.gguf")
	require.NoError(t, os.WriteFile(tmp, src, 0o644))
	_, err = mc.Add(tmp, modelcat.NewEntry{ID: "test--stories260k", FileName: "stories260K.gguf", Source: modelcat.SourceLocal})
	require.NoError(t, err)
	return mc, bc, src, hex.EncodeToString(sum[:])
}

func listen(t testing.TB, addr string) *blob.Listener {
	l, err := blob.Listen(addr, nil)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- l.Serve() }()
	t.Cleanup(func() {
		require.NoError(t, l.Close())
		require.NoError(t, <-done)
	})
	return l
}

// TestDirectPath: with a blob port the bytes come over it (whole and from
// an offset); a receiver that cannot reach the port, one that does not
// ask, and a server without a port all fall back to the libp2p stream with
// the same bytes.
func TestDirectPath(t *testing.T) {
	mc, bc, src, sha := servedModel(t)
	tests := []struct {
		name       string
		listenAddr string // "" = no blob port
		noDirect   bool
		wantDirect bool
	}{
		{name: "direct", listenAddr: "127.0.0.1:0", wantDirect: true},
		// The offer names a port on 127.0.0.2; the receiver dials the
		// address it knows the server by, 127.0.0.1, and is refused.
		{name: "port unreachable", listenAddr: "127.0.0.2:0"},
		{name: "receiver does not ask", listenAddr: "127.0.0.1:0", noDirect: true},
		{name: "no blob port"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			server, client := newHost(t), newHost(t)
			var l *blob.Listener
			if tc.listenAddr != "" {
				l = listen(t, tc.listenAddr)
			}
			served := blob.New(blob.Config{Models: mc, Binaries: bc, Streams: server, Direct: l})
			server.Handle(blob.Protocol, served.Handle)
			require.NoError(t, client.AddPeer(server.ID(), server.Addrs()))
			reg := holdings{alive: map[string]bool{server.ID().String(): true},
				models: []fsm.ModelHolding{{NodeID: server.ID().String(), ModelID: "test--stories260k", SHA256: sha}}}
			cmc, cbc := catalogs(t)
			fetch := blob.New(blob.Config{Models: cmc, Binaries: cbc, Streams: client, Holdings: reg, NoDirect: tc.noDirect})

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			readRanges(ctx, t, fetch, sha, src, 0, 4097, int64(len(src)))
			if l != nil {
				want := uint64(0)
				if tc.wantDirect {
					want = 3
				}
				require.Equal(t, want, l.Claimed())
			}
		})
	}
}

// readRanges reads the model with this sha256 from each offset through
// fetch's ModelSource and checks the bytes against src.
func readRanges(ctx context.Context, t *testing.T, fetch *blob.Service, sha string, src []byte, offsets ...int64) {
	t.Helper()
	for _, off := range offsets {
		rc, size, err := fetch.ModelSource().OpenRange(ctx, sha, off)
		require.NoError(t, err, "offset %d", off)
		got, err := io.ReadAll(rc)
		require.NoError(t, err)
		require.NoError(t, rc.Close())
		require.Equal(t, int64(len(src)), size)
		require.Equal(t, src[off:], got, "offset %d", off)
	}
}
