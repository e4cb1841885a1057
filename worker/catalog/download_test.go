package catalog

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rbee-project/rbee/internal/trickle"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Test release keys: deterministic, never the project's.
var (
	keyA = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0xa1}, ed25519.SeedSize))
	keyB = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0xb2}, ed25519.SeedSize))
)

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

// trustA makes a catalog trust keyA besides the built-in key.
func trustA(cfg *Config) { cfg.ReleaseKeys = []ed25519.PublicKey{pub(keyA)} }

func sign(t *testing.T, k ed25519.PrivateKey, version string, sums []byte) []byte {
	t.Helper()
	sig, err := SignRelease(k, version, sums)
	require.NoError(t, err)
	return sig
}

// counting serves root (a real release folder on disk) and counts the
// requests for files that are neither SHA256SUMS, its signature nor LATEST.
type counting struct {
	assets atomic.Int64
	h      http.Handler
}

func (c *counting) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	base := path.Base(r.URL.Path)
	if base != SumsFile && base != SigFile && base != LatestFile {
		c.assets.Add(1)
	}
	c.h.ServeHTTP(w, r)
}

// releaseServer serves a real release folder from disk:
// root/{version}/{asset}, SHA256SUMS, SHA256SUMS.sig.
func releaseServer(t *testing.T, root string) (*httptest.Server, *counting) {
	t.Helper()
	h := &counting{h: http.FileServer(http.Dir(root))}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, h
}

// writeRelease writes a release folder; sums "" writes no SHA256SUMS, sig
// nil no SHA256SUMS.sig.
func writeRelease(t *testing.T, root, version string, assets map[string][]byte, sums string, sig []byte) {
	t.Helper()
	dir := filepath.Join(root, version)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for name, b := range assets {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o644))
	}
	if sums != "" {
		require.NoError(t, os.WriteFile(filepath.Join(dir, SumsFile), []byte(sums), 0o644))
	}
	if sig != nil {
		require.NoError(t, os.WriteFile(filepath.Join(dir, SigFile), sig, 0o644))
	}
}

func TestDownload(t *testing.T) {
	root := t.TempDir()
	asset := AssetName(CPUType(), runtime.GOOS, runtime.GOARCH)
	good := bytes.Repeat([]byte("worker-binary-v1 "), 10000)
	other := AssetName(CPUType(), "plan9", "386")
	// Text-mode and binary-mode lines, like sha256sum writes them.
	sums100 := fmt.Sprintf("%s  %s\n%s *%s\n", sha(good), asset, sha([]byte("x")), other)
	writeRelease(t, root, "v1.0.0", map[string][]byte{asset: good, other: []byte("x")}, sums100, sign(t, keyA, "v1.0.0", []byte(sums100)))
	signed := func(version, sums string) { // a signed folder with the good binary
		writeRelease(t, root, version, map[string][]byte{asset: good}, sums, sign(t, keyA, version, []byte(sums)))
	}
	goodSums := fmt.Sprintf("%s  %s\n", sha(good), asset)
	writeRelease(t, root, "v1.0.1", map[string][]byte{asset: []byte("tampered")}, goodSums, sign(t, keyA, "v1.0.1", []byte(goodSums)))
	signed("v1.0.2", fmt.Sprintf("%s  something-else\n", sha(good)))
	writeRelease(t, root, "v1.0.3", map[string][]byte{asset: good}, "", nil)
	writeRelease(t, root, "v1.0.4", nil, goodSums, sign(t, keyA, "v1.0.4", []byte(goodSums)))
	writeRelease(t, root, "v1.0.5", map[string][]byte{asset: good}, "not a sums file\n",
		[]byte(base64.StdEncoding.EncodeToString(ed25519.Sign(keyA, SignedMessage("v1.0.5", []byte("not a sums file\n"))))))
	writeRelease(t, root, "v1.0.6", map[string][]byte{asset: good}, goodSums, nil)
	writeRelease(t, root, "v1.0.7", map[string][]byte{asset: good}, goodSums, sign(t, keyB, "v1.0.7", []byte(goodSums)))
	writeRelease(t, root, "v1.0.8", map[string][]byte{asset: good}, goodSums, []byte("not a signature\n"))
	// v1.0.0's signed sums and signature, replayed as another version.
	writeRelease(t, root, "v1.0.9", map[string][]byte{asset: good, other: []byte("x")}, sums100, sign(t, keyA, "v1.0.0", []byte(sums100)))
	// Signed, then the sums changed (a tampered binary with its new sum).
	writeRelease(t, root, "v1.0.10", map[string][]byte{asset: []byte("evil")}, fmt.Sprintf("%s  %s\n", sha([]byte("evil")), asset),
		sign(t, keyA, "v1.0.10", []byte(goodSums)))
	writeRelease(t, root, "v1.0.11", map[string][]byte{asset: good}, goodSums, []byte{})
	require.NoError(t, os.WriteFile(filepath.Join(root, LatestFile), []byte("v1.0.0\n"), 0o644))
	srv, count := releaseServer(t, root)

	dir := t.TempDir()
	c := newCatalog(t, dir, func(cfg *Config) {
		cfg.ReleaseBaseURL = srv.URL + "/"
		trustA(cfg)
	})
	ctx := context.Background()

	t.Run("good", func(t *testing.T) {
		var last, total atomic.Int64
		e, err := c.Download(ctx, DownloadOptions{Version: "v1.0.0", Progress: func(d, tot int64) {
			last.Store(d)
			total.Store(tot)
		}})
		require.NoError(t, err)
		assert.Equal(t, SourceDownloaded, e.Source)
		assert.True(t, e.Signed)
		assert.False(t, e.Pinned)
		assert.Equal(t, sha(good), e.SHA256)
		assert.Equal(t, int64(len(good)), last.Load())
		assert.Equal(t, int64(len(good)), total.Load())
		b, err := os.ReadFile(e.Path)
		require.NoError(t, err)
		assert.Equal(t, good, b)
		// The signed sums are kept next to the binary, byte for byte.
		b, err = os.ReadFile(filepath.Join(filepath.Dir(e.Path), SumsFile))
		require.NoError(t, err)
		assert.Equal(t, sums100, string(b))
		_, err = os.Stat(filepath.Join(filepath.Dir(e.Path), SigFile))
		require.NoError(t, err)
	})
	t.Run("latest and other platform", func(t *testing.T) {
		e, err := c.Download(ctx, DownloadOptions{OS: "plan9", Arch: "386"})
		require.NoError(t, err)
		assert.Equal(t, "v1.0.0", e.Version)
		assert.Equal(t, "plan9", e.OS)
		assert.True(t, e.Signed)
	})
	before := files(t, dir)
	failures := []struct {
		name    string
		opts    DownloadOptions
		want    error
		message string
		fetched bool // the binary itself was requested
	}{
		{"tampered binary", DownloadOptions{Version: "v1.0.1"}, ErrChecksum, "signed SHA256SUMS", true},
		{"asset not in the signed SHA256SUMS", DownloadOptions{Version: "v1.0.2"}, ErrChecksum, "lists no " + asset, false},
		{"no SHA256SUMS", DownloadOptions{Version: "v1.0.3"}, ErrDownload, "404", false},
		{"asset 404", DownloadOptions{Version: "v1.0.4"}, ErrDownload, "404", true},
		{"version 404", DownloadOptions{Version: "v9.9.9"}, ErrDownload, "404", false},
		{"malformed SHA256SUMS", DownloadOptions{Version: "v1.0.5"}, ErrBadName, "line 1", false},
		{"unsigned", DownloadOptions{Version: "v1.0.6"}, ErrUnsigned, "SHA256SUMS.sig", false},
		{"signed by an untrusted key", DownloadOptions{Version: "v1.0.7"}, ErrSignature, "trusted key", false},
		{"garbage signature", DownloadOptions{Version: "v1.0.8"}, ErrSignature, "line 1", false},
		{"signature of another version", DownloadOptions{Version: "v1.0.9"}, ErrSignature, "", false},
		{"sums changed after signing", DownloadOptions{Version: "v1.0.10"}, ErrSignature, "", false},
		{"empty signature file", DownloadOptions{Version: "v1.0.11"}, ErrUnsigned, "", false},
		{"hostile version", DownloadOptions{Version: "../v1.0.0"}, ErrBadName, "", false},
		{"unknown type", DownloadOptions{Type: "rocm", Version: "v1.0.0"}, ErrUnknownType, "", false},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			n := count.assets.Load()
			_, err := c.Download(ctx, tt.opts)
			require.ErrorIs(t, err, tt.want)
			assert.Contains(t, err.Error(), tt.message)
			assert.Equal(t, before, files(t, dir), "a failed download adds nothing")
			assert.Len(t, c.List(), 2)
			assert.Equal(t, tt.fetched, count.assets.Load() > n, "binary requested")
		})
	}

	// Without a trusted key for it, the good release is refused too.
	onlyBuiltin := newCatalog(t, t.TempDir(), func(cfg *Config) { cfg.ReleaseBaseURL = srv.URL })
	_, err := onlyBuiltin.Download(ctx, DownloadOptions{Version: "v1.0.0"})
	require.ErrorIs(t, err, ErrSignature)
	assert.Empty(t, onlyBuiltin.List())
	assert.Empty(t, files(t, onlyBuiltin.Dir()))

	noBase := newCatalog(t, t.TempDir(), trustA)
	_, err = noBase.Download(ctx, DownloadOptions{Version: "v1.0.0"})
	require.ErrorIs(t, err, ErrDownload)
	notHTTP := newCatalog(t, t.TempDir(), func(cfg *Config) { cfg.ReleaseBaseURL = "file:///etc" })
	_, err = notHTTP.Download(ctx, DownloadOptions{Version: "v1.0.0"})
	require.ErrorIs(t, err, ErrBadName)
}

func TestDownloadPin(t *testing.T) {
	root := t.TempDir()
	asset := AssetName(CPUType(), runtime.GOOS, runtime.GOARCH)
	for _, v := range []string{"v1.0.0", "v2.0.0"} {
		bin := []byte("#!/bin/sh\necho " + v + "\n")
		sums := fmt.Sprintf("%s  %s\n", sha(bin), asset)
		writeRelease(t, root, v, map[string][]byte{asset: bin}, sums, sign(t, keyA, v, []byte(sums)))
	}
	srv, _ := releaseServer(t, root)
	dir := t.TempDir()
	cfg := func(cfg *Config) {
		cfg.ReleaseBaseURL = srv.URL
		cfg.Version = "v1.0.0"
		trustA(cfg)
	}
	c := newCatalog(t, dir, cfg)
	ctx := context.Background()
	host := func(c *Catalog) (Entry, error) { return c.Default(TypeCPU, runtime.GOOS, runtime.GOARCH) }

	// A release of another version than the node's is no default.
	_, err := c.Download(ctx, DownloadOptions{Version: "v2.0.0"})
	require.NoError(t, err)
	_, err = host(c)
	require.ErrorIs(t, err, ErrNotFound)
	assert.Contains(t, err.Error(), "v2.0.0 (downloaded)")
	// The node's own version is.
	_, err = c.Download(ctx, DownloadOptions{Version: "v1.0.0"})
	require.NoError(t, err)
	d, err := host(c)
	require.NoError(t, err)
	assert.Equal(t, "v1.0.0", d.Version)
	// A pin wins, and survives a restart.
	e, err := c.Download(ctx, DownloadOptions{Version: "v2.0.0", Pin: true})
	require.NoError(t, err)
	assert.True(t, e.Pinned)
	d, err = host(newCatalog(t, dir, cfg))
	require.NoError(t, err)
	assert.Equal(t, "v2.0.0", d.Version)
	assert.True(t, d.Signed, "the proof verifies again on open")
}

func TestDownloadCancelledMidway(t *testing.T) {
	asset := AssetName(CPUType(), runtime.GOOS, runtime.GOARCH)
	body := bytes.Repeat([]byte("y"), 1<<20)
	sums := fmt.Sprintf("%s  %s\n", sha(body), asset)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, SumsFile):
			fmt.Fprint(w, sums)
		case strings.HasSuffix(r.URL.Path, SigFile):
			_, _ = w.Write(sign(t, keyA, "v1", []byte(sums)))
		default:
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			_, _ = w.Write(body[:1000])
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}
	}))
	defer srv.Close()
	dir := t.TempDir()
	c := newCatalog(t, dir, func(cfg *Config) {
		cfg.ReleaseBaseURL = srv.URL
		trustA(cfg)
	})
	ctx, cancel := context.WithCancel(context.Background())
	_, err := c.Download(ctx, DownloadOptions{Version: "v1", Progress: func(done, _ int64) {
		if done >= 1000 {
			cancel()
		}
	}})
	require.ErrorIs(t, err, context.Canceled)
	assert.Empty(t, c.List())
	assert.Empty(t, files(t, dir))
}

// secret is what a server on the inside might hold; no error may carry it.
const secret = "INTERNAL-ONLY: db_password=hunter2"

// rawServer answers every connection on loopback with resp, byte for
// byte: a real server that speaks broken HTTP.
func rawServer(t *testing.T, resp string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 4096)
				_, _ = conn.Read(buf)
				_, _ = io.WriteString(conn, resp)
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// No error echoes what a server answered, whatever part of the answer
// carries it.
func TestDownloadErrorsDoNotEchoTheServer(t *testing.T) {
	asset := AssetName(CPUType(), runtime.GOOS, runtime.GOARCH)
	hexSecret := hex.EncodeToString([]byte("hunter2hunter2hunter2hunter2hunt"))
	secretSums := hexSecret + "  " + asset + "\n"
	okSums := fmt.Sprintf("%s  %s\n", sha([]byte("bin")), asset)
	handler := func(latest, sums, sig string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch path.Base(r.URL.Path) {
			case LatestFile:
				fmt.Fprint(w, latest)
			case SumsFile:
				fmt.Fprint(w, sums)
			case SigFile:
				fmt.Fprint(w, sig)
			default:
				fmt.Fprint(w, "bin")
			}
		})
	}
	noColon := strings.ReplaceAll(secret, ":", "") // a malformed header line
	chunkedBadTrailer := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n" +
		"6\r\nv1.0.0\r\n0\r\nbroken " + noColon + "\r\n\r\n"
	tests := []struct {
		name    string
		url     func(t *testing.T) string
		version string
		want    error
		says    string
	}{
		{"LATEST with a secret", func(t *testing.T) string {
			return serve(t, handler(secret, okSums, ""))
		}, "", ErrDownload, "LATEST is not a version string (34 bytes"},
		{"oversized LATEST", func(t *testing.T) string {
			return serve(t, handler(strings.Repeat(secret, 100), okSums, ""))
		}, "", ErrDownload, "larger than 256 bytes"},
		{"SHA256SUMS with a secret, signed", func(t *testing.T) string {
			return serve(t, handler("v1", secret+"\n", string(sign0(keyA, "v1", secret+"\n"))))
		}, "", ErrBadName, "line 1"},
		{"SHA256SUMS with a secret digest", func(t *testing.T) string {
			return serve(t, handler("v1", strings.Replace(secretSums, hexSecret[:2], "zz", 1), string(sign0(keyA, "v1", strings.Replace(secretSums, hexSecret[:2], "zz", 1)))))
		}, "", ErrBadName, "not 64 hex digits"},
		{"signature with a secret", func(t *testing.T) string {
			return serve(t, handler("v1", okSums, secret))
		}, "", ErrSignature, "line 1"},
		{"reason phrase with a secret", func(t *testing.T) string {
			return rawServer(t, "HTTP/1.1 404 "+secret+"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		}, "v1", ErrDownload, "HTTP 404 Not Found"},
		{"status line is a secret", func(t *testing.T) string {
			return rawServer(t, secret+"\r\n\r\n")
		}, "v1", ErrDownload, "malformed or interrupted"},
		{"header with a secret", func(t *testing.T) string {
			return rawServer(t, "HTTP/1.1 200 OK\r\nbroken "+noColon+"\r\n\r\n")
		}, "v1", ErrDownload, "malformed or interrupted"},
		{"chunked trailer with a secret", func(t *testing.T) string {
			return rawServer(t, chunkedBadTrailer)
		}, "", ErrDownload, "malformed or interrupted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := tt.url(t)
			dir := t.TempDir()
			c := newCatalog(t, dir, func(cfg *Config) {
				cfg.ReleaseBaseURL = url
				trustA(cfg)
			})
			_, err := c.Download(context.Background(), DownloadOptions{Version: tt.version})
			t.Log(err)
			require.ErrorIs(t, err, tt.want)
			assert.Contains(t, err.Error(), tt.says)
			for _, leak := range []string{"hunter2", "INTERNAL", hexSecret[:16]} {
				assert.NotContains(t, err.Error(), leak)
			}
			assert.Empty(t, files(t, dir))
		})
	}
}

// serve runs h on loopback for the test.
func serve(t *testing.T, h http.Handler) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// sign0 is sign for places without a *testing.T.
func sign0(k ed25519.PrivateKey, version, sums string) []byte {
	return []byte(base64.StdEncoding.EncodeToString(ed25519.Sign(k, SignedMessage(version, []byte(sums)))) + "\n")
}

// catalogPeer is a PeerSource backed by another node's catalog, the way
// the node serves binaries over libp2p (Catalog.OpenRelease on the far
// side); tamper flips a byte of the content, proof replaces the proof.
type catalogPeer struct {
	c      *Catalog
	tamper bool
	proof  *ReleaseProof
}

func (p catalogPeer) Open(_ context.Context, typ, version, goos, goarch string) (PeerBinary, error) {
	rc, e, proof, err := p.c.OpenRelease(typ, version, goos, goarch)
	if err != nil {
		return PeerBinary{}, err
	}
	if p.proof != nil {
		proof = *p.proof
	}
	if p.tamper {
		b, _ := io.ReadAll(rc)
		rc.Close()
		b[0] ^= 0xff
		return PeerBinary{Body: io.NopCloser(bytes.NewReader(b)), Size: e.Size, Release: proof}, nil
	}
	return PeerBinary{Body: rc, Size: e.Size, Release: proof}, nil
}

// unsignedPeer serves a binary from its catalog without any proof (an
// older node, or one that lies about what it has).
type unsignedPeer struct{ c *Catalog }

func (p unsignedPeer) Open(_ context.Context, typ, version, goos, goarch string) (PeerBinary, error) {
	rc, e, err := p.c.Open(typ, version, goos, goarch)
	if err != nil {
		return PeerBinary{}, err
	}
	return PeerBinary{Body: rc, Size: e.Size}, nil
}

// proofPeer serves a binary with a proof of its choosing.
type proofPeer struct {
	c     *Catalog
	proof ReleaseProof
}

func (p proofPeer) Open(_ context.Context, typ, version, goos, goarch string) (PeerBinary, error) {
	rc, e, err := p.c.Open(typ, version, goos, goarch)
	if err != nil {
		return PeerBinary{}, err
	}
	return PeerBinary{Body: rc, Size: e.Size, Release: p.proof}, nil
}

func TestFetchFromPeer(t *testing.T) {
	ctx := context.Background()
	peer := newCatalog(t, t.TempDir(), trustA)
	content := bytes.Repeat([]byte("peer binary "), 5000)
	asset := AssetName(CPUType(), "linux", "riscv64")
	sums := []byte(fmt.Sprintf("%s  %s\n", sha(content), asset))
	proof := ReleaseProof{Sums: sums, Sig: sign(t, keyA, "v2", sums)}
	pe, err := peer.AddReader(ctx, AddOptions{Type: TypeCPU, Version: "v2", OS: "linux", Arch: "riscv64", Source: SourceDownloaded, Release: &proof},
		bytes.NewReader(content))
	require.NoError(t, err)
	require.True(t, pe.Signed)
	// A binary built on the peer is not a release.
	_, err = peer.AddReader(ctx, AddOptions{Type: TypeCPU, Version: "dev", OS: "linux", Arch: "riscv64", Source: SourceBuilt}, bytes.NewReader(content))
	require.NoError(t, err)
	// The v2 proof, claimed for v3 (whose content is the same bytes).
	_, err = peer.AddReader(ctx, AddOptions{Type: TypeCPU, Version: "v3", OS: "linux", Arch: "riscv64", Source: SourceDownloaded}, bytes.NewReader(content))
	require.NoError(t, err)
	v3replay := proofPeer{c: peer, proof: proof}
	otherSums := []byte(fmt.Sprintf("%s  %s\n", sha([]byte("x")), asset))

	opts := PeerOptions{Version: "v2", OS: "linux", Arch: "riscv64"}
	refused := []struct {
		name     string
		receiver func(*Config)
		src      PeerSource
		opts     PeerOptions
		want     error
	}{
		{"receiver does not trust the signing key", nil, catalogPeer{c: peer}, opts, ErrSignature},
		{"tampered content", trustA, catalogPeer{c: peer, tamper: true}, opts, ErrChecksum},
		{"built on the peer", trustA, catalogPeer{c: peer}, PeerOptions{Version: "dev", OS: "linux", Arch: "riscv64"}, ErrUnsigned},
		{"sent without a proof", trustA, unsignedPeer{c: peer}, opts, ErrUnsigned},
		{"proof of another version", trustA, v3replay, PeerOptions{Version: "v3", OS: "linux", Arch: "riscv64"}, ErrSignature},
		{"signed sums of another binary", trustA, catalogPeer{c: peer, proof: &ReleaseProof{Sums: otherSums, Sig: sign(t, keyA, "v2", otherSums)}}, opts, ErrChecksum},
		{"signed sums without the asset", trustA, catalogPeer{c: peer, proof: &ReleaseProof{Sums: []byte(sha(content) + "  other\n"), Sig: sign(t, keyA, "v2", []byte(sha(content)+"  other\n"))}}, opts, ErrChecksum},
		{"proof signed by an untrusted key", trustA, catalogPeer{c: peer, proof: &ReleaseProof{Sums: sums, Sig: sign(t, keyB, "v2", sums)}}, opts, ErrSignature},
		{"not on the peer", trustA, catalogPeer{c: peer}, PeerOptions{Version: "v4", OS: "linux", Arch: "riscv64"}, ErrNotFound},
		{"no version", trustA, catalogPeer{c: peer}, PeerOptions{OS: "linux", Arch: "riscv64"}, ErrBadName},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			c := newCatalog(t, dir, tt.receiver)
			_, err := c.FetchFromPeer(ctx, tt.src, tt.opts)
			require.ErrorIs(t, err, tt.want)
			assert.Empty(t, c.List())
			assert.Empty(t, files(t, dir), "nothing installed")
		})
	}

	dir := t.TempDir()
	c := newCatalog(t, dir, trustA)
	var done int64
	e, err := c.FetchFromPeer(ctx, catalogPeer{c: peer}, PeerOptions{Version: "v2", OS: "linux", Arch: "riscv64",
		Progress: func(d, total int64) {
			assert.Equal(t, pe.Size, total)
			done = d
		}})
	require.NoError(t, err)
	assert.Equal(t, SourcePeer, e.Source)
	assert.True(t, e.Signed)
	assert.Equal(t, pe.SHA256, e.SHA256)
	assert.Equal(t, pe.Size, done)
	b, err := os.ReadFile(e.Path)
	require.NoError(t, err)
	assert.Equal(t, content, b)

	// The copy keeps the proof, so it can be copied on.
	third := newCatalog(t, t.TempDir(), trustA)
	e3, err := third.FetchFromPeer(ctx, catalogPeer{c: c}, PeerOptions{Version: "v2", OS: "linux", Arch: "riscv64"})
	require.NoError(t, err)
	assert.True(t, e3.Signed)
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

// A release server that stops sending (before its answer, or in the
// middle of a file) fails the download after Config.IdleTimeout, naming
// the stall, instead of holding it forever; one that sends the binary a
// byte every 10 ms is never idle, and the minimum rate ends it. Nothing is
// installed.
func TestDownloadStalledServer(t *testing.T) {
	asset := AssetName(CPUType(), runtime.GOOS, runtime.GOARCH)
	body := bytes.Repeat([]byte("y"), 1<<16)
	sums := fmt.Sprintf("%s  %s\n", sha(body), asset)
	for _, tc := range []struct {
		stall   string
		trickle bool
		err     string
	}{
		{stall: LatestFile, err: "sent nothing for 300ms"},
		{stall: SumsFile, err: "sent nothing for 300ms"},
		{stall: SigFile, err: "sent nothing for 300ms"},
		{stall: asset, err: "sent nothing for 300ms"},
		{stall: asset, trickle: true, err: "fewer than the 4096"},
	} {
		t.Run(fmt.Sprintf("%s trickled=%v", tc.stall, tc.trickle), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				name := path.Base(r.URL.Path)
				if name == tc.stall && name != asset {
					<-r.Context().Done()
					return
				}
				switch name {
				case LatestFile:
					fmt.Fprint(w, "v1\n")
				case SumsFile:
					fmt.Fprint(w, sums)
				case SigFile:
					_, _ = w.Write(sign(t, keyA, "v1", []byte(sums)))
				case asset:
					if tc.trickle {
						trickle.Write(w, r, body, 10*time.Millisecond)
						return
					}
					w.Header().Set("Content-Length", fmt.Sprint(len(body)))
					_, _ = w.Write(body[:1000])
					w.(http.Flusher).Flush()
					<-r.Context().Done()
				}
			}))
			defer srv.Close()
			dir := t.TempDir()
			c := newCatalog(t, dir, func(cfg *Config) {
				cfg.ReleaseBaseURL = srv.URL
				cfg.IdleTimeout = 300 * time.Millisecond
				if tc.trickle {
					cfg.IdleTimeout = 10 * time.Second
					cfg.MinBytes = 4 << 10
					cfg.RateWindow = 300 * time.Millisecond
				}
				trustA(cfg)
			})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := c.Download(ctx, DownloadOptions{})
			require.NoError(t, ctx.Err(), "the stall ended the download, not the test's deadline")
			require.ErrorIs(t, err, errStalled)
			require.ErrorIs(t, err, ErrDownload)
			assert.Contains(t, err.Error(), tc.err)
			assert.Empty(t, c.List())
			assert.Empty(t, files(t, dir))
		})
	}
}

// A release server's redirects are followed to http(s) URLs only and at
// most 10 times; a refused one says which rule it broke, not the generic
// "malformed or interrupted HTTP response", and never the Location.
func TestDownloadRedirects(t *testing.T) {
	asset := AssetName(CPUType(), runtime.GOOS, runtime.GOARCH)
	body := []byte("#!/bin/sh\n")
	sums := fmt.Sprintf("%s  %s\n", sha(body), asset)
	// A service on another loopback host than the release server's
	// 127.0.0.1, as a router's or a metadata service would be.
	var reached atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	require.NoError(t, err)
	internal := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		fmt.Fprint(w, "v1\n")
	}))
	internal.Listener.Close()
	internal.Listener = ln
	internal.Start()
	defer internal.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	for _, tt := range []struct {
		name, to, err string
	}{
		{"to another path", "/moved/LATEST", ""},
		{"to a file URL", "file:///etc/passwd", "redirected to a URL that is not http(s)"},
		{"to an ftp URL", "ftp://127.0.0.1/secret", "redirected to a URL that is not http(s)"},
		{"in a loop", "/loop", "redirected more than 10 times"},
		{"to another loopback host", internal.URL + "/secret", "is a local or private address"},
		{"to a name of a loopback address", "http://localhost:" + port + "/secret", "is a local or private address"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch {
				case r.URL.Path == "/"+LatestFile:
					http.Redirect(w, r, tt.to, http.StatusFound)
				case r.URL.Path == "/loop":
					http.Redirect(w, r, "/loop", http.StatusFound)
				case r.URL.Path == "/moved/"+LatestFile:
					fmt.Fprint(w, "v1\n")
				case strings.HasSuffix(r.URL.Path, SumsFile):
					fmt.Fprint(w, sums)
				case strings.HasSuffix(r.URL.Path, SigFile):
					_, _ = w.Write(sign(t, keyA, "v1", []byte(sums)))
				case strings.HasSuffix(r.URL.Path, asset):
					_, _ = w.Write(body)
				default:
					http.NotFound(w, r)
				}
			}))
			defer srv.Close()
			c := newCatalog(t, t.TempDir(), func(cfg *Config) {
				cfg.ReleaseBaseURL = srv.URL
				trustA(cfg)
			})
			e, err := c.Download(context.Background(), DownloadOptions{})
			if tt.err == "" {
				require.NoError(t, err)
				require.Equal(t, "v1", e.Version)
				return
			}
			require.ErrorIs(t, err, ErrDownload)
			require.ErrorContains(t, err, tt.err)
			require.NotContains(t, err.Error(), "passwd")
			require.NotContains(t, err.Error(), "secret")
			assert.Empty(t, c.List())
			assert.Zero(t, reached.Load(), "the internal service got no request")
		})
	}
}

// The release client asks for no compression: a server that sends a
// small gzip answer unpacking to more than MaxBinarySize (a bomb) when the
// client accepts gzip gets no chance to.
func TestDownloadAsksForNoCompression(t *testing.T) {
	asset := AssetName(CPUType(), runtime.GOOS, runtime.GOARCH)
	body := []byte("#!/bin/sh\necho worker\n")
	sums := fmt.Sprintf("%s  %s\n", sha(body), asset)
	var bomb bytes.Buffer
	zw := gzip.NewWriter(&bomb)
	_, err := zw.Write(make([]byte, 4<<20))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch path.Base(r.URL.Path) {
		case SumsFile:
			fmt.Fprint(w, sums)
		case SigFile:
			_, _ = w.Write(sign(t, keyA, "v1", []byte(sums)))
		case asset:
			if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
				w.Header().Set("Content-Encoding", "gzip")
				_, _ = w.Write(bomb.Bytes())
				return
			}
			_, _ = w.Write(body)
		}
	}))
	defer srv.Close()
	c := newCatalog(t, t.TempDir(), func(cfg *Config) {
		cfg.ReleaseBaseURL = srv.URL
		cfg.MaxBinarySize = 1 << 20
		trustA(cfg)
	})
	e, err := c.Download(context.Background(), DownloadOptions{Version: "v1"})
	require.NoError(t, err)
	require.Equal(t, int64(len(body)), e.Size)
}

// signedHolder is a catalog that holds body as the signed cpu binary
// v2 for linux/riscv64 (keyA's release), as a peer that downloaded it does.
func signedHolder(t *testing.T, body []byte) *Catalog {
	t.Helper()
	peer := newCatalog(t, t.TempDir(), trustA)
	sums := fmt.Sprintf("%s  %s\n", sha(body), AssetName(CPUType(), "linux", "riscv64"))
	proof := ReleaseProof{Sums: []byte(sums), Sig: sign(t, keyA, "v2", []byte(sums))}
	_, err := peer.AddReader(context.Background(), AddOptions{Type: TypeCPU, Version: "v2", OS: "linux", Arch: "riscv64",
		Source: SourceDownloaded, Release: &proof}, bytes.NewReader(body))
	require.NoError(t, err)
	return peer
}

// endless is a body that never ends; read counts what was taken from it.
type endless struct{ read atomic.Int64 }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'z'
	}
	e.read.Add(int64(len(p)))
	return len(p), nil
}

func (e *endless) Close() error { return nil }

// A peer that announces a binary's size and then sends without end is cut
// as soon as it passes the announced size, not at the catalog's limit.
func TestFetchFromPeerEndlessBody(t *testing.T) {
	peer := signedHolder(t, []byte("#!/bin/sh\necho rbee-worker\n"))
	dir := t.TempDir()
	c := newCatalog(t, dir, func(cfg *Config) {
		trustA(cfg)
		cfg.MaxBinarySize = 64 << 20
	})
	src := &endlessPeer{catalogPeer: catalogPeer{c: peer}}
	_, err := c.FetchFromPeer(context.Background(), src, PeerOptions{Version: "v2", OS: "linux", Arch: "riscv64"})
	require.ErrorIs(t, err, ErrChecksum)
	require.ErrorContains(t, err, "more than the 27 bytes it announced")
	require.Less(t, src.body.read.Load(), int64(1<<20), "cut at the announced size, not at MaxBinarySize")
	assert.Empty(t, c.List())
}

// endlessPeer announces the real binary's size and proof, then sends an
// endless body.
type endlessPeer struct {
	catalogPeer
	body endless
}

func (p *endlessPeer) Open(ctx context.Context, typ, version, goos, goarch string) (PeerBinary, error) {
	pb, err := p.catalogPeer.Open(ctx, typ, version, goos, goarch)
	if err != nil {
		return PeerBinary{}, err
	}
	pb.Body.Close()
	pb.Body = &p.body
	return pb, nil
}

// tricklePeer serves the real binary and proof of a catalog, one byte
// every 10 ms, until the context of its Open ends (the node's source
// resets its stream then).
type tricklePeer struct{ catalogPeer }

func (p tricklePeer) Open(ctx context.Context, typ, version, goos, goarch string) (PeerBinary, error) {
	pb, err := p.catalogPeer.Open(ctx, typ, version, goos, goarch)
	if err != nil {
		return PeerBinary{}, err
	}
	pr, pw := io.Pipe()
	src := pb.Body
	go func() {
		defer src.Close()
		b := make([]byte, 1)
		for {
			if _, err := io.ReadFull(src, b); err != nil {
				pw.CloseWithError(err)
				return
			}
			if _, err := pw.Write(b); err != nil {
				return
			}
			select {
			case <-ctx.Done():
				pw.CloseWithError(ctx.Err())
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	pb.Body = pr
	return pb, nil
}

// A peer that sends a binary a byte at a time is cut off by the minimum
// rate, as a release server is, and nothing is added.
func TestFetchFromPeerTrickle(t *testing.T) {
	peer := signedHolder(t, bytes.Repeat([]byte("#!/bin/sh\n"), 1000))
	c := newCatalog(t, t.TempDir(), func(cfg *Config) {
		trustA(cfg)
		cfg.MinBytes = 4 << 10
		cfg.RateWindow = 300 * time.Millisecond
	})
	// Bounded even where the minimum is not enforced.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := c.FetchFromPeer(ctx, tricklePeer{catalogPeer{c: peer}}, PeerOptions{Version: "v2", OS: "linux", Arch: "riscv64"})
	require.NoError(t, ctx.Err(), "the trickle ended the copy, not the test's deadline")
	require.ErrorIs(t, err, ErrDownload)
	require.ErrorIs(t, err, errPeerBody)
	require.ErrorContains(t, err, "fewer than the 4096")
	assert.Empty(t, c.List())
}
