package catalog

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// member is one entry of a test archive: a file (body), a directory (dir),
// a symbolic link (link = its target) or, in a tar, any other type
// (typeflag).
type member struct {
	name, body, link string
	dir              bool
	mode             int64
	typeflag         byte
}

// tarGzBytes builds a tar.gz of ms with the standard library's writers.
func tarGzBytes(ms []member) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, m := range ms {
		h := &tar.Header{Name: m.name, Mode: 0o644, Size: int64(len(m.body)), Typeflag: tar.TypeReg}
		switch {
		case m.dir:
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		case m.link != "":
			h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, m.link, 0
		case m.typeflag != 0:
			h.Typeflag, h.Size = m.typeflag, 0
		}
		if m.mode != 0 {
			h.Mode = m.mode
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(m.body)); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// zipBytes builds a zip of ms (typeflag is ignored) with archive/zip.
func zipBytes(ms []member) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, m := range ms {
		h := &zip.FileHeader{Name: m.name, Method: zip.Deflate}
		body := m.body
		switch {
		case m.dir:
			h.Name = strings.TrimSuffix(m.name, "/") + "/"
			h.SetMode(fs.ModeDir | 0o755)
		case m.link != "":
			h.SetMode(fs.ModeSymlink | 0o777)
			body = m.link
		case m.mode != 0:
			h.SetMode(fs.FileMode(m.mode))
		default:
			h.SetMode(0o644)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			return nil, err
		}
		if !m.dir {
			if _, err := w.Write([]byte(body)); err != nil {
				return nil, err
			}
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func tarGz(t *testing.T, ms []member) []byte {
	t.Helper()
	b, err := tarGzBytes(ms)
	require.NoError(t, err)
	return b
}

func zipOf(t *testing.T, ms []member) []byte {
	t.Helper()
	b, err := zipBytes(ms)
	require.NoError(t, err)
	return b
}

// engineTree is what a llama.cpp release holds: the server in bin/ and a
// shared library with its soname link.
var engineTree = []member{
	{name: "build/", dir: true},
	{name: "build/bin/llama-server", body: "#!/bin/sh\necho llama-server\n", mode: 0o755},
	{name: "build/bin/libggml.so.0", body: "ELF-ish"},
	{name: "build/bin/libggml.so", link: "libggml.so.0"},
	{name: "build/LICENSE", body: "MIT"},
}

func TestDownloadEngineArchive(t *testing.T) {
	llama := LlamaServerType()
	goos, goarch := runtime.GOOS, runtime.GOARCH
	cudaTGZ := tarGz(t, engineTree)
	vkZip := zipOf(t, engineTree)
	assetCUDA := ArchiveAssets(llama, goos, goarch, "cuda")[0]
	assetVK := ArchiveAssets(llama, goos, goarch, "vulkan")[1]
	require.True(t, strings.HasSuffix(assetVK, ".zip"))

	root := t.TempDir()
	engRoot := filepath.Join(root, TypeLlamaServer)
	sums := fmt.Sprintf("%s  %s\n%s  %s\n", sha(cudaTGZ), assetCUDA, sha(vkZip), assetVK)
	writeRelease(t, engRoot, "b6000", map[string][]byte{assetCUDA: cudaTGZ, assetVK: vkZip}, sums, sign(t, keyA, "b6000", []byte(sums)))
	require.NoError(t, os.WriteFile(filepath.Join(engRoot, LatestFile), []byte("b6000\n"), 0o644))
	srv, _ := releaseServer(t, root)

	dir := t.TempDir()
	c := newCatalog(t, dir, func(cfg *Config) {
		cfg.ReleaseBaseURL = srv.URL
		trustA(cfg)
	})
	ctx := context.Background()

	e, err := c.Download(ctx, DownloadOptions{Type: TypeLlamaServer, Accel: "cuda"})
	require.NoError(t, err)
	require.Equal(t, "b6000", e.Version)
	require.Equal(t, assetCUDA, e.Archive)
	require.Equal(t, []string{"cuda"}, e.Devices)
	require.Equal(t, "build/bin/llama-server", e.Exec)
	require.Equal(t, sha(cudaTGZ), e.SHA256)
	require.True(t, e.Signed)
	fi, err := os.Stat(e.Path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o755), fi.Mode().Perm(), "the server is executable")
	lib, err := os.ReadFile(filepath.Join(filepath.Dir(e.Path), "libggml.so"))
	require.NoError(t, err, "the library link resolves next to the server")
	require.Equal(t, "ELF-ish", string(lib))

	// The catalog reopens it as it was.
	c2 := newCatalog(t, dir, trustA)
	e2, err := c2.Lookup(TypeLlamaServer, "b6000", goos, goarch)
	require.NoError(t, err)
	require.Equal(t, e.Path, e2.Path)
	require.True(t, e2.Signed)

	// Archives are not copied between hives (each downloads its own build).
	_, _, _, err = c.OpenRelease(TypeLlamaServer, "b6000", goos, goarch)
	require.ErrorIs(t, err, ErrNotFound)

	// A replacement whose index cannot be written changes nothing: the
	// old archive, its tree and its proof are back, and the entry too.
	withBrokenIndex(t, dir, func() {
		_, err := c.Download(ctx, DownloadOptions{Type: TypeLlamaServer, Version: "b6000", Accel: "vulkan"})
		require.Error(t, err)
	})
	kept, err := c.Lookup(TypeLlamaServer, "b6000", goos, goarch)
	require.NoError(t, err)
	require.Equal(t, assetCUDA, kept.Archive)
	got, err := os.ReadFile(filepath.Join(c.entryDir(kept), assetCUDA))
	require.NoError(t, err)
	require.Equal(t, sha(cudaTGZ), sha(got))
	lib, err = os.ReadFile(filepath.Join(filepath.Dir(kept.Path), "libggml.so"))
	require.NoError(t, err, "the old tree is back")
	require.Equal(t, "ELF-ish", string(lib))
	_, err = os.Stat(filepath.Join(c.entryDir(kept), assetVK))
	require.ErrorIs(t, err, os.ErrNotExist, "the new archive is gone")
	_, err = c.readProof(kept)
	require.NoError(t, err, "the proof is back")
	for _, f := range files(t, dir) {
		require.NotContains(t, f, tmpPrefix)
	}

	// Another accelerator of the same version replaces it, zip this time.
	e, err = c.Download(ctx, DownloadOptions{Type: TypeLlamaServer, Version: "b6000", Accel: "vulkan"})
	require.NoError(t, err)
	require.Equal(t, assetVK, e.Archive)
	require.Len(t, c.List(), 1)
	_, err = os.Stat(filepath.Join(c.entryDir(e), assetCUDA))
	require.ErrorIs(t, err, os.ErrNotExist, "the replaced archive is gone")

	// No build for that accelerator; an unknown one.
	_, err = c.Download(ctx, DownloadOptions{Type: TypeLlamaServer, Version: "b6000", Accel: "rocm"})
	require.ErrorIs(t, err, ErrNotFound)
	_, err = c.Download(ctx, DownloadOptions{Type: TypeLlamaServer, Version: "b6000", Accel: "tpu"})
	require.ErrorIs(t, err, ErrBadName)
	// Engines rbee has no release of.
	_, err = c.Download(ctx, DownloadOptions{Type: TypeVLLM})
	require.ErrorIs(t, err, ErrBadName)

	// Delete removes the tree, the archive and the proof.
	_, err = c.Delete(TypeLlamaServer, "")
	require.NoError(t, err)
	left, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, d := range left {
		require.Equal(t, indexFile, d.Name(), "only the index is left")
	}
}

func TestBadEngineArchivesChangeNothing(t *testing.T) {
	llama := LlamaServerType()
	goos, goarch := runtime.GOOS, runtime.GOARCH
	outside := t.TempDir()
	cases := map[string][]byte{
		"path traversal":      tarGz(t, append([]member{{name: "../escape", body: "x"}}, engineTree...)),
		"absolute path":       tarGz(t, append([]member{{name: "/etc/evil", body: "x"}}, engineTree...)),
		"link out":            tarGz(t, append([]member{{name: "lib", link: outside}}, engineTree...)),
		"link up":             tarGz(t, append([]member{{name: "lib", link: "../.."}}, engineTree...)),
		"link chain up":       tarGz(t, append([]member{{name: "a", link: "."}, {name: "d", link: "a/.."}}, engineTree...)),
		"write through link":  tarGz(t, append([]member{{name: "a", link: "build"}, {name: "a/x", body: "x"}}, engineTree...)),
		"no server":           tarGz(t, []member{{name: "bin/other", body: "x"}}),
		"two servers":         tarGz(t, append([]member{{name: "llama-server", body: "x"}}, engineTree...)),
		"server is a link":    tarGz(t, []member{{name: "real", body: "x"}, {name: "llama-server", link: "real"}}),
		"duplicate member":    tarGz(t, append([]member{{name: "build/LICENSE", body: "first"}}, engineTree...)),
		"zip traversal":       zipOf(t, append([]member{{name: "../../escape", body: "x"}}, engineTree...)),
		"not an archive":      []byte("definitely not gzip"),
		"zip as tar.gz":       zipOf(t, engineTree),
		"zip link out":        zipOf(t, append([]member{{name: "lib", link: "/etc"}}, engineTree...)),
		"tar device file":     tarDevice(t),
		"backslash in a name": tarGz(t, append([]member{{name: `..\evil`, body: "x"}}, engineTree...)),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			c := newCatalog(t, dir, trustA)
			asset := ArchiveAssets(llama, goos, goarch, "cpu")[0]
			sums := fmt.Sprintf("%s  %s\n", sha(data), asset)
			proof := ReleaseProof{Sums: []byte(sums), Sig: sign(t, keyA, "b1", []byte(sums))}
			_, err := c.AddReader(context.Background(), AddOptions{Type: TypeLlamaServer, Version: "b1", Release: &proof}, bytes.NewReader(data))
			require.ErrorIs(t, err, ErrBadArchive)
			require.Empty(t, c.List())
			left, err := os.ReadDir(dir)
			require.NoError(t, err)
			require.Empty(t, left, "nothing is left behind")
			out, err := os.ReadDir(outside)
			require.NoError(t, err)
			require.Empty(t, out)
			_, err = os.Stat(filepath.Join(filepath.Dir(dir), "escape"))
			require.ErrorIs(t, err, os.ErrNotExist)
		})
	}
}

func tarDevice(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	require.NoError(t, tw.WriteHeader(&tar.Header{Name: "dev", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666}))
	require.NoError(t, tw.Close())
	require.NoError(t, zw.Close())
	return buf.Bytes()
}
