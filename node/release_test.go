package node_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
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

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/client"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/nodetest"
	workercat "github.com/rbee-project/rbee/worker/catalog"
)

// Test release keys: deterministic, never the project's.
var (
	releaseKey1 = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x11}, ed25519.SeedSize))
	releaseKey2 = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x22}, ed25519.SeedSize))
)

func pubOf(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

// writeSignedRelease writes root/version with the assets, a SHA256SUMS of
// them and, when key is not nil, its SHA256SUMS.sig.
func writeSignedRelease(t *testing.T, root, version string, assets map[string][]byte, key ed25519.PrivateKey) {
	t.Helper()
	dir := filepath.Join(root, version)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for name, b := range assets {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o644))
	}
	sums, err := workercat.ReleaseSums(dir)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, workercat.SumsFile), sums, 0o644))
	if key != nil {
		sig, err := workercat.SignRelease(key, version, sums)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, workercat.SigFile), sig, 0o644))
	}
}

// releaseServer serves root on loopback and counts every request.
func releaseServer(t *testing.T, root string) (*httptest.Server, *atomic.Int64) {
	var hits atomic.Int64
	fs := http.FileServer(http.Dir(root))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if path.Base(r.URL.Path) == workercat.LatestFile && strings.Contains(r.URL.Path, "secret") {
			fmt.Fprint(w, "INTERNAL-ONLY: db_password=hunter2")
			return
		}
		fs.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func workerAsset() string { return fmt.Sprintf("rbee-worker-%s-%s", runtime.GOOS, runtime.GOARCH) }

// A job cannot say where to fetch executables from: any URL field is
// refused with 400 before a job exists, here and forwarded, and nothing is
// fetched.
func TestJobsCannotNameAReleaseLocation(t *testing.T) {
	root := t.TempDir()
	writeSignedRelease(t, root, "v9.9.9", map[string][]byte{workerAsset(): []byte("#!/bin/sh\n")}, releaseKey1)
	rel, hits := releaseServer(t, root)
	c := nodetest.New(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tt := range []struct {
		name string
		req  map[string]any
	}{
		{"base_url", map[string]any{"operation": "worker_download", "version": "v9.9.9", "base_url": rel.URL}},
		{"base_url forwarded", map[string]any{"operation": "worker_download", "hive": "node1", "version": "v9.9.9", "base_url": rel.URL}},
		{"release_url", map[string]any{"operation": "worker_download", "release_url": rel.URL}},
		{"url", map[string]any{"operation": "worker_download", "url": rel.URL}},
		{"BaseURL", map[string]any{"operation": "worker_download", "BaseURL": rel.URL}},
		{"empty base_url", map[string]any{"operation": "worker_download", "base_url": ""}},
		{"on build", map[string]any{"operation": "worker_build", "base_url": rel.URL}},
		{"on spawn", map[string]any{"operation": "worker_spawn", "model": "builtin:stories260k", "worker_release_url": rel.URL}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := client.New(c.Nodes[0].URL(), c.Nodes[0].AdminKey()).Submit(ctx, tt.req)
			var ae *client.APIError
			require.ErrorAs(t, err, &ae)
			require.Equal(t, http.StatusBadRequest, ae.Status)
			require.Equal(t, "bad_request", ae.Code)
			require.Contains(t, ae.Message, "--worker-release-url")
		})
	}
	require.Zero(t, hits.Load(), "no node fetched anything")
	for _, n := range c.Nodes {
		var bl struct{ Binaries []workercat.Entry }
		run(t, n, map[string]any{"operation": "worker_binary_list"}, &bl)
		require.Empty(t, bl.Binaries)
	}
}

// The tester's report, replayed: releases come from the node's
// configuration and must be signed by a key the node trusts; a binary
// that arrives is the spawn default only when it is the node's version or
// pinned; peers accept only signed binaries, checked with their own keys.
func TestSignedWorkerReleases(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	worker, err := os.ReadFile(buildWorker(t))
	require.NoError(t, err)
	asset := workerAsset()
	root := t.TempDir()
	writeSignedRelease(t, root, "v9.9.9", map[string][]byte{asset: worker}, releaseKey1)
	writeSignedRelease(t, root, "v8.8.8", map[string][]byte{asset: worker}, releaseKey2)
	writeSignedRelease(t, root, "v6.6.1", map[string][]byte{asset: []byte("#!/bin/sh\necho pwned\n")}, nil)
	writeSignedRelease(t, root, "v6.6.2", map[string][]byte{asset: worker}, releaseKey1)
	require.NoError(t, os.WriteFile(filepath.Join(root, "v6.6.2", asset), []byte("#!/bin/sh\necho pwned\n"), 0o644)) // tampered after signing
	writeSignedRelease(t, root, "v6.6.3", map[string][]byte{"rbee-worker-plan9-386": worker}, releaseKey1)           // no entry for this platform
	writeSignedRelease(t, root, "v6.6.4", map[string][]byte{asset: worker}, ed25519.NewKeyFromSeed(make([]byte, 32)))
	rel, _ := releaseServer(t, root)

	// node0 trusts releaseKey1 and has no release location; node1 has it
	// and trusts both keys.
	bin := buildWorker(t)
	dataDir1 := filepath.Join(t.TempDir(), "node1")
	c := nodetest.New(t, 2, func(i int, cfg *node.Config) {
		cfg.WorkerBinary = bin
		cfg.WorkerHeartbeatTimeout = 5 * time.Second
		cfg.WorkerReleaseKeys = []ed25519.PublicKey{pubOf(releaseKey1)}
		if i == 1 {
			cfg.DataDir = dataDir1
			cfg.WorkerReleaseURL = rel.URL
			cfg.WorkerReleaseKeys = append(cfg.WorkerReleaseKeys, pubOf(releaseKey2))
		}
	})
	n0, n1 := c.Nodes[0], c.Nodes[1]
	list := func(n *node.Node, hive string) []workercat.Entry {
		var bl struct{ Binaries []workercat.Entry }
		run(t, n, map[string]any{"operation": "worker_binary_list", "hive": hive}, &bl)
		return bl.Binaries
	}

	// Refused releases leave nothing on node1.
	for _, tt := range []struct {
		version, code, says string
	}{
		{"v6.6.1", "forbidden", "SHA256SUMS.sig"},
		{"v6.6.2", "forbidden", "signed SHA256SUMS"},
		{"v6.6.3", "forbidden", "lists no " + asset},
		{"v6.6.4", "forbidden", "trusted key"},
	} {
		je := runErr(t, n0, map[string]any{"operation": "worker_download", "hive": "node1", "version": tt.version})
		require.Equal(t, tt.code, je.Code, "%s: %s", tt.version, je.Message)
		require.Contains(t, je.Message, tt.says, tt.version)
		require.Empty(t, list(n0, "node1"), "a refused release installs nothing")
	}
	entries, err := os.ReadDir(filepath.Join(dataDir1, "workers"))
	if !errors.Is(err, os.ErrNotExist) {
		require.NoError(t, err)
		for _, e := range entries {
			require.Equal(t, "index.json", e.Name(), "no file is left in the catalog dir")
		}
	}

	// A signed release of another version than the node's ("dev") is in
	// the catalog, but spawns keep the node's own binary unless they name
	// the version.
	var be workercat.Entry
	run(t, n0, map[string]any{"operation": "worker_download", "hive": "node1", "version": "v9.9.9"}, &be)
	require.Equal(t, workercat.SourceDownloaded, be.Source)
	require.True(t, be.Signed)
	require.False(t, be.Pinned)
	w := spawn(t, n0, "node1", 1)
	require.Equal(t, "dev", w.BinaryVersion, "a downloaded release does not become the default")
	var named api.SpawnResult
	run(t, n0, map[string]any{"operation": "worker_spawn", "hive": "node1", "model": "builtin:stories260k", "version": "v9.9.9", "threads": 1}, &named)
	require.Equal(t, "v9.9.9", named.BinaryVersion, "a spawn may name it")
	je := runErr(t, n0, map[string]any{"operation": "worker_spawn", "hive": "node1", "model": "builtin:stories260k", "version": "v7.7.7"})
	require.Equal(t, "not_found", je.Code)

	// Pinned, it is the default.
	run(t, n0, map[string]any{"operation": "worker_download", "hive": "node1", "version": "v8.8.8", "default": true}, &be)
	require.True(t, be.Pinned)
	var pinned api.SpawnResult
	run(t, n0, map[string]any{"operation": "worker_spawn", "hive": "node1", "model": "builtin:stories260k", "threads": 1}, &pinned)
	require.Equal(t, "v8.8.8", pinned.BinaryVersion)

	// Peer copies to node0 (no release location of its own): v9.9.9 is
	// signed with a key node0 trusts; v8.8.8 with one it does not; "dev"
	// was never signed (the bundled binary node1 catalogued).
	require.Eventually(t, func() bool {
		have := map[string]bool{}
		for _, h := range n0.Registry().Binaries() {
			if h.NodeID == n1.ID() {
				have[h.Version] = true
			}
		}
		return have["v9.9.9"] && have["v8.8.8"] && have["dev"]
	}, nodetest.WaitTimeout, 50*time.Millisecond)
	var pe workercat.Entry
	run(t, n0, map[string]any{"operation": "worker_download", "version": "v9.9.9"}, &pe)
	require.Equal(t, workercat.SourcePeer, pe.Source)
	require.True(t, pe.Signed, "the copy keeps the signed sums")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, v := range []string{"v8.8.8", "dev"} {
		var narration []string
		err := client.New(n0.URL(), n0.AdminKey()).Run(ctx, map[string]any{"operation": "worker_download", "version": v}, func(ev jobs.Event) error {
			narration = append(narration, ev.Message)
			return nil
		})
		require.Error(t, err, v)
		require.Contains(t, strings.Join(narration, "\n"), "peer copy refused", v)
	}
	got := list(n0, "")
	require.Len(t, got, 1, "only the copy that verified: %+v", got)
	require.Equal(t, "v9.9.9", got[0].Version)
}

// An error never carries what the release server answered.
func TestWorkerDownloadErrorDoesNotEchoTheServer(t *testing.T) {
	rel, _ := releaseServer(t, t.TempDir())
	c := nodetest.New(t, 1, func(i int, cfg *node.Config) { cfg.WorkerReleaseURL = rel.URL + "/secret" })
	je := runErr(t, c.Nodes[0], map[string]any{"operation": "worker_download"})
	require.Contains(t, je.Message, "LATEST is not a version string")
	require.NotContains(t, je.Message, "hunter2")
	require.NotContains(t, je.Message, "INTERNAL")
}

// Two nodes hold a signed worker release and the release server is gone;
// the holder asked first serves a copy that fails its check (a rotten
// file, or one signed by a key nobody trusts). The third node copies the
// binary from the other holder instead of giving up.
func TestBinaryPeerCopyFailsOverToAnotherHolder(t *testing.T) {
	content := bytes.Repeat([]byte("#!/bin/sh\necho worker\n"), 4096)
	asset := workerAsset()
	for _, tt := range []struct {
		name  string
		spoil func(t *testing.T, e workercat.Entry)
	}{
		{"rotten binary", func(t *testing.T, e workercat.Entry) {
			f, err := os.OpenFile(e.Path, os.O_RDWR, 0)
			require.NoError(t, err)
			_, err = f.WriteAt([]byte{0xff, 0xff, 0xff, 0xff}, int64(len(content)/2))
			require.NoError(t, err)
			require.NoError(t, f.Close())
		}},
		{"proof by an untrusted key", func(t *testing.T, e workercat.Entry) {
			dir := filepath.Dir(e.Path)
			sums, err := os.ReadFile(filepath.Join(dir, workercat.SumsFile))
			require.NoError(t, err)
			sig, err := workercat.SignRelease(releaseKey2, e.Version, sums)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(dir, workercat.SigFile), sig, 0o644))
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeSignedRelease(t, root, "v9.9.9", map[string][]byte{asset: content}, releaseKey1)
			rel, _ := releaseServer(t, root)
			c := nodetest.New(t, 3, func(i int, cfg *node.Config) {
				cfg.WorkerReleaseKeys = []ed25519.PublicKey{pubOf(releaseKey1)}
				if i < 2 {
					cfg.WorkerReleaseURL = rel.URL
				}
			})
			n2 := c.Nodes[2]
			entries := map[string]workercat.Entry{}
			for _, n := range c.Nodes[:2] {
				var e workercat.Entry
				run(t, n, map[string]any{"operation": "worker_download", "version": "v9.9.9"}, &e)
				entries[n.ID()] = e
			}
			rel.Close()
			var first string
			require.Eventually(t, func() bool {
				held := 0
				for _, h := range n2.Registry().Binaries() {
					if _, ok := entries[h.NodeID]; ok && h.Version == "v9.9.9" {
						if held == 0 {
							first = h.NodeID
						}
						held++
					}
				}
				return held == 2
			}, nodetest.WaitTimeout, 20*time.Millisecond)
			tt.spoil(t, entries[first])

			var e workercat.Entry
			run(t, n2, map[string]any{"operation": "worker_download", "version": "v9.9.9"}, &e)
			require.Equal(t, workercat.SourcePeer, e.Source)
			require.Equal(t, entries[first].SHA256, e.SHA256)
			got, err := os.ReadFile(e.Path)
			require.NoError(t, err)
			require.Equal(t, content, got)
		})
	}
}

// A release location that has no such version, fails or cannot be reached
// is the source's fault, not the node's: the job's error says not_found or
// unavailable, never internal.
func TestWorkerDownloadReleaseServerErrorCodes(t *testing.T) {
	root := t.TempDir()
	writeSignedRelease(t, root, "v9.9.9", map[string][]byte{workerAsset(): []byte("#!/bin/sh\n")}, releaseKey1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v5.0.0/") {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		http.FileServer(http.Dir(root)).ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	c := nodetest.New(t, 2, func(i int, cfg *node.Config) {
		cfg.WorkerReleaseKeys = []ed25519.PublicKey{pubOf(releaseKey1)}
		cfg.WorkerReleaseURL = srv.URL
		if i == 1 {
			cfg.WorkerReleaseURL = gone.URL
		}
	})
	for _, tt := range []struct {
		name, hive, version, code string
	}{
		{"no such version", "node0", "v1.0.0", "not_found"},
		{"server error", "node0", "v5.0.0", "unavailable"},
		{"server gone", "node1", "v9.9.9", "unavailable"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			je := runErr(t, c.Nodes[0], map[string]any{"operation": "worker_download", "hive": tt.hive, "version": tt.version})
			require.Equal(t, tt.code, je.Code, je.Message)
		})
	}
}

// A hive without a release location whose peer copy is refused says why
// (the signature, with code forbidden), not that no peer has the binary.
func TestWorkerDownloadPeerCopyRefusedSaysWhy(t *testing.T) {
	root := t.TempDir()
	writeSignedRelease(t, root, "v8.8.8", map[string][]byte{workerAsset(): []byte("#!/bin/sh\n")}, releaseKey2)
	rel, _ := releaseServer(t, root)
	c := nodetest.New(t, 2, func(i int, cfg *node.Config) {
		cfg.WorkerReleaseKeys = []ed25519.PublicKey{pubOf(releaseKey1)}
		if i == 1 {
			cfg.WorkerReleaseURL = rel.URL
			cfg.WorkerReleaseKeys = append(cfg.WorkerReleaseKeys, pubOf(releaseKey2))
		}
	})
	n0, n1 := c.Nodes[0], c.Nodes[1]
	var e workercat.Entry
	run(t, n1, map[string]any{"operation": "worker_download", "version": "v8.8.8"}, &e)
	require.Eventually(t, func() bool {
		for _, h := range n0.Registry().Binaries() {
			if h.NodeID == n1.ID() && h.Version == "v8.8.8" {
				return true
			}
		}
		return false
	}, nodetest.WaitTimeout, 20*time.Millisecond)
	je := runErr(t, n0, map[string]any{"operation": "worker_download", "version": "v8.8.8"})
	require.Equal(t, "forbidden", je.Code, je.Message)
	require.Contains(t, je.Message, "from a peer failed")
	require.Contains(t, je.Message, "trusted key")
}
