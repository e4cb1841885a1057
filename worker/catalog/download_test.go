package catalog

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// releaseServer serves a real release folder from disk:
// root/{version}/{asset} and root/{version}/SHA256SUMS.
func releaseServer(t *testing.T, root string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.FileServer(http.Dir(root)))
	t.Cleanup(srv.Close)
	return srv
}

func writeRelease(t *testing.T, root, version string, assets map[string][]byte, sums string) {
	t.Helper()
	dir := filepath.Join(root, version)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for name, b := range assets {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o644))
	}
	if sums != "" {
		require.NoError(t, os.WriteFile(filepath.Join(dir, SumsFile), []byte(sums), 0o644))
	}
}

func TestDownload(t *testing.T) {
	root := t.TempDir()
	asset := AssetName(CPUType(), runtime.GOOS, runtime.GOARCH)
	good := bytes.Repeat([]byte("worker-binary-v1 "), 10000)
	other := AssetName(CPUType(), "plan9", "386")
	// Text-mode and binary-mode lines, like sha256sum writes them.
	writeRelease(t, root, "v1.0.0", map[string][]byte{asset: good, other: []byte("x")},
		fmt.Sprintf("%s  %s\n%s *%s\n", sha(good), asset, sha([]byte("x")), other))
	writeRelease(t, root, "v1.0.1", map[string][]byte{asset: []byte("tampered")},
		fmt.Sprintf("%s  %s\n", sha(good), asset))
	writeRelease(t, root, "v1.0.2", map[string][]byte{asset: good}, fmt.Sprintf("%s  something-else\n", sha(good)))
	writeRelease(t, root, "v1.0.3", map[string][]byte{asset: good}, "")
	writeRelease(t, root, "v1.0.4", nil, fmt.Sprintf("%s  %s\n", sha(good), asset))
	writeRelease(t, root, "v1.0.5", map[string][]byte{asset: good}, "not a sums file\n")
	require.NoError(t, os.WriteFile(filepath.Join(root, LatestFile), []byte("v1.0.0\n"), 0o644))
	srv := releaseServer(t, root)

	dir := t.TempDir()
	c := newCatalog(t, dir, func(cfg *Config) { cfg.ReleaseBaseURL = srv.URL + "/" })
	ctx := context.Background()

	t.Run("good", func(t *testing.T) {
		var last, total atomic.Int64
		e, err := c.Download(ctx, DownloadOptions{Version: "v1.0.0", Progress: func(d, tot int64) {
			last.Store(d)
			total.Store(tot)
		}})
		require.NoError(t, err)
		assert.Equal(t, SourceDownloaded, e.Source)
		assert.Equal(t, sha(good), e.SHA256)
		assert.Equal(t, int64(len(good)), last.Load())
		assert.Equal(t, int64(len(good)), total.Load())
		b, err := os.ReadFile(e.Path)
		require.NoError(t, err)
		assert.Equal(t, good, b)
	})
	t.Run("latest and other platform", func(t *testing.T) {
		e, err := c.Download(ctx, DownloadOptions{OS: "plan9", Arch: "386"})
		require.NoError(t, err)
		assert.Equal(t, "v1.0.0", e.Version)
		assert.Equal(t, "plan9", e.OS)
	})
	before := files(t, dir)
	failures := []struct {
		name    string
		opts    DownloadOptions
		want    error
		message string
	}{
		{"bad checksum", DownloadOptions{Version: "v1.0.1"}, ErrChecksum, "sha256"},
		{"asset not in SHA256SUMS", DownloadOptions{Version: "v1.0.2"}, ErrDownload, "lists no " + asset},
		{"no SHA256SUMS", DownloadOptions{Version: "v1.0.3"}, ErrDownload, "404"},
		{"asset 404", DownloadOptions{Version: "v1.0.4"}, ErrDownload, "404"},
		{"version 404", DownloadOptions{Version: "v9.9.9"}, ErrDownload, "404"},
		{"malformed SHA256SUMS", DownloadOptions{Version: "v1.0.5"}, ErrBadName, "line 1"},
		{"hostile version", DownloadOptions{Version: "../v1.0.0"}, ErrBadName, ""},
		{"unknown type", DownloadOptions{Type: "rocm", Version: "v1.0.0"}, ErrUnknownType, ""},
		{"not http", DownloadOptions{Version: "v1.0.0", BaseURL: "file:///etc"}, ErrBadName, ""},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Download(ctx, tt.opts)
			require.ErrorIs(t, err, tt.want)
			assert.Contains(t, err.Error(), tt.message)
			assert.Equal(t, before, files(t, dir), "a failed download adds nothing")
			assert.Len(t, c.List(), 2)
		})
	}

	noBase := newCatalog(t, t.TempDir(), nil)
	_, err := noBase.Download(ctx, DownloadOptions{Version: "v1.0.0"})
	require.ErrorIs(t, err, ErrDownload)
}

func TestDownloadCancelledMidway(t *testing.T) {
	asset := AssetName(CPUType(), runtime.GOOS, runtime.GOARCH)
	body := bytes.Repeat([]byte("y"), 1<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, SumsFile):
			fmt.Fprintf(w, "%s  %s\n", sha(body), asset)
		default:
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			_, _ = w.Write(body[:1000])
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}
	}))
	defer srv.Close()
	dir := t.TempDir()
	c := newCatalog(t, dir, nil)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := c.Download(ctx, DownloadOptions{BaseURL: srv.URL, Version: "v1", Progress: func(done, _ int64) {
		if done >= 1000 {
			cancel()
		}
	}})
	require.Error(t, err)
	assert.Empty(t, c.List())
	assert.Empty(t, files(t, dir))
}

// catalogPeer is a PeerSource backed by another node's catalog, the way
// the node serves binaries over libp2p (Catalog.Open on the far side).
type catalogPeer struct {
	c      *Catalog
	tamper bool
}

func (p catalogPeer) Open(_ context.Context, typ, version, goos, goarch string) (io.ReadCloser, int64, string, error) {
	rc, e, err := p.c.Open(typ, version, goos, goarch)
	if err != nil {
		return nil, 0, "", err
	}
	if p.tamper {
		b, _ := io.ReadAll(rc)
		rc.Close()
		b[0] ^= 0xff
		return io.NopCloser(bytes.NewReader(b)), e.Size, e.SHA256, nil
	}
	return rc, e.Size, e.SHA256, nil
}

func TestFetchFromPeer(t *testing.T) {
	ctx := context.Background()
	peer := newCatalog(t, t.TempDir(), nil)
	content := bytes.Repeat([]byte("peer binary "), 5000)
	pe, err := peer.AddReader(ctx, AddOptions{Type: TypeCPU, Version: "v2", OS: "linux", Arch: "riscv64"}, bytes.NewReader(content))
	require.NoError(t, err)

	dir := t.TempDir()
	c := newCatalog(t, dir, nil)

	_, err = c.FetchFromPeer(ctx, catalogPeer{c: peer, tamper: true}, PeerOptions{Version: "v2", OS: "linux", Arch: "riscv64"})
	require.ErrorIs(t, err, ErrChecksum)
	assert.Empty(t, c.List())
	assert.Empty(t, files(t, dir))

	_, err = c.FetchFromPeer(ctx, catalogPeer{c: peer}, PeerOptions{Version: "v3", OS: "linux", Arch: "riscv64"})
	require.ErrorIs(t, err, ErrDownload)
	require.ErrorIs(t, err, ErrNotFound)

	var done int64
	e, err := c.FetchFromPeer(ctx, catalogPeer{c: peer}, PeerOptions{Version: "v2", OS: "linux", Arch: "riscv64",
		Progress: func(d, total int64) {
			assert.Equal(t, pe.Size, total)
			done = d
		}})
	require.NoError(t, err)
	assert.Equal(t, SourcePeer, e.Source)
	assert.Equal(t, pe.SHA256, e.SHA256)
	assert.Equal(t, pe.Size, done)
	b, err := os.ReadFile(e.Path)
	require.NoError(t, err)
	assert.Equal(t, content, b)

	_, err = c.FetchFromPeer(ctx, catalogPeer{c: peer}, PeerOptions{OS: "linux", Arch: "riscv64"})
	require.ErrorIs(t, err, ErrBadName, "a peer copy names its version")
}

func TestParseSHA256SUMS(t *testing.T) {
	h1, h2 := sha([]byte("1")), sha([]byte("2"))
	tests := []struct {
		name    string
		in      string
		want    map[string]string
		wantErr bool
	}{
		{"text and binary mode", h1 + "  a\r\n" + strings.ToUpper(h2) + " *./b\n\n# comment\n", map[string]string{"a": h1, "b": h2}, false},
		{"duplicate same", h1 + "  a\n" + h1 + "  a\n", map[string]string{"a": h1}, false},
		{"empty", "", map[string]string{}, false},
		{"duplicate different", h1 + "  a\n" + h2 + "  a\n", nil, true},
		{"short hash", "abcd  a\n", nil, true},
		{"not hex", strings.Repeat("z", 64) + "  a\n", nil, true},
		{"no name", h1 + "  \n", nil, true},
		{"one space", h1 + " a\n", nil, true},
		{"too large", strings.Repeat("#\n", maxSumsBytes), nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSHA256SUMS([]byte(tt.in))
			if tt.wantErr {
				require.ErrorIs(t, err, ErrBadName)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func FuzzParseSHA256SUMS(f *testing.F) {
	f.Add([]byte(sha([]byte("1")) + "  rbee-worker-linux-amd64\n"))
	f.Add([]byte(sha([]byte("1")) + " *a\r\n# c\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sums, err := ParseSHA256SUMS(data)
		if err != nil {
			return
		}
		for name, sum := range sums {
			if name == "" || !isHexSHA256(sum) || sum != strings.ToLower(sum) {
				t.Fatalf("bad parse: %q → %q", name, sum)
			}
		}
	})
}

func FuzzValidName(f *testing.F) {
	for _, s := range []string{"v1.0.0", "..", "a/b", "cpu", ".x", "dev-0123abcd"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidName("x", s) != nil {
			return
		}
		if s == "." || s == ".." || strings.ContainsAny(s, `/\`+"\x00") || filepath.Base(s) != s || s[0] == '.' || s[0] == '-' {
			t.Fatalf("accepted hostile name %q", s)
		}
	})
}
