package catalog

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The files fuzzIndexDir lays out, relative to the catalog directory, and
// their contents: a cpu binary, an unpacked llama-server archive release.
var fuzzIndexFiles = map[string]string{
	"cpu/v1/linux-amd64/rbee-worker":                                  "rbee-worker-binary",
	"llama-server/b1/linux-amd64/llama-server-linux-amd64-cpu.tar.gz": "archive-bytes",
	"llama-server/b1/linux-amd64/tree/build/bin/llama-server":         "#!/bin/sh\n",
	"llama-server/b1/linux-amd64/tree/build/bin/libggml.so":           "lib",
}

// fuzzIndexDir makes a catalog directory holding fuzzIndexFiles and,
// outside it, a directory ext with an executable llama-server (a
// registered engine) and a non-executable file.
func fuzzIndexDir(t *testing.T) (dir, ext string) {
	root := t.TempDir()
	dir, ext = filepath.Join(root, "workers"), filepath.Join(root, "ext")
	for rel, body := range fuzzIndexFiles {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(body), 0o755))
	}
	require.NoError(t, os.MkdirAll(ext, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(ext, "llama-server"), []byte("#!/bin/sh\n"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(ext, "plain"), []byte("data"), 0o644))
	return dir, ext
}

// fuzzIndexEntries are index entries that match fuzzIndexDir, with $EXT
// for the directory of the registered engine.
func fuzzIndexEntries() []Entry {
	added := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	return []Entry{
		{Type: TypeCPU, Version: "v1", OS: "linux", Arch: "amd64", Binary: "rbee-worker",
			Size: int64(len(fuzzIndexFiles["cpu/v1/linux-amd64/rbee-worker"])), SHA256: strings.Repeat("ab", 32),
			Source: SourceBuilt, Added: added},
		{Type: TypeLlamaServer, Version: "b1", OS: "linux", Arch: "amd64", Binary: "llama-server",
			Size: int64(len("archive-bytes")), SHA256: strings.Repeat("cd", 32), Source: SourceDownloaded,
			Added: added.Add(time.Hour), Signed: true, Devices: []string{"cpu"},
			Archive: "llama-server-linux-amd64-cpu.tar.gz", Exec: "build/bin/llama-server"},
		{Type: TypeLlamaServer, Version: "local", OS: "linux", Arch: "amd64", Binary: "llama-server",
			Path: "$EXT/llama-server", Size: 10, Source: SourceRegistered, Added: added, Pinned: true,
			Devices: []string{"cuda"}, HealthPath: "/health"},
	}
}

// FuzzLoadIndex opens a worker catalog whose index.json holds arbitrary
// bytes ("$EXT" stands for a directory outside the catalog that holds an
// executable llama-server and a non-executable "plain"). New never panics
// and never deletes a catalogued file. Every entry it keeps has valid
// names; a registered engine is an absolute path to an executable file; any
// other entry has the path the catalog derives, inside its directory, with
// its stored file there at the recorded size, valid archive fields, and a
// signature only if its proof verifies. What it loaded is written back with
// writeIndex and reopens to the same entries.
func FuzzLoadIndex(f *testing.F) {
	seedDir := f.TempDir()
	seed, err := New(Config{Dir: seedDir})
	if err != nil {
		f.Fatal(err)
	}
	entries := fuzzIndexEntries()
	for i := range entries {
		m := map[string]Entry{}
		for _, e := range entries[:i+1] {
			m[e.key()] = e
		}
		if err := seed.writeIndex(m); err != nil {
			f.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(seedDir, indexFile))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	sha := strings.Repeat("a", 64)
	for _, s := range []string{
		`{"format":1,"entries":[]}`,
		`{"format":1}`,
		`{"format":2,"entries":[]}`,
		`{"format":1,"entries":[{"type":"cpu","version":"v1","os":"linux","arch":"amd64","binary":"rbee-worker","size":18,"path":"/etc/passwd"}]}`,
		`{"format":1,"entries":[{"type":"cpu","version":"..","os":"linux","arch":"amd64","binary":"rbee-worker","size":18}]}`,
		`{"format":1,"entries":[{"type":"cpu","version":"v1","os":"linux","arch":"amd64","binary":"../../../ext/plain","size":4}]}`,
		`{"format":1,"entries":[{"type":"cpu","version":"v1","os":"linux","arch":"amd64","binary":"rbee-worker","size":17}]}`,
		`{"format":1,"entries":[{"type":"cpu","version":"v1","os":"linux","arch":"amd64","binary":"rbee-worker","size":18,"signed":true,"sha256":"` + sha + `"}]}`,
		`{"format":1,"entries":[{"type":"cpu","version":"v1","os":"linux","arch":"amd64","binary":"rbee-worker","size":18,"archive":"x.tar.gz","exec":"rbee-worker"}]}`,
		`{"format":1,"entries":[{"type":"llama-server","version":"b1","os":"linux","arch":"amd64","binary":"llama-server","size":13,"devices":["cpu"],"archive":"llama-server-linux-amd64-cpu.tar.gz","exec":"../../../../ext/llama-server"}]}`,
		`{"format":1,"entries":[{"type":"llama-server","version":"b1","os":"linux","arch":"amd64","binary":"llama-server","size":13,"devices":["cpu"],"archive":"llama-server-linux-amd64-cpu.tar.gz","exec":"/bin/sh"}]}`,
		`{"format":1,"entries":[{"type":"llama-server","version":"b1","os":"linux","arch":"amd64","binary":"llama-server","size":13,"devices":["cpu","cuda"],"archive":"llama-server-linux-amd64-cpu.tar.gz","exec":"build/bin/llama-server"}]}`,
		`{"format":1,"entries":[{"type":"llama-server","version":"b1","os":"linux","arch":"amd64","binary":"llama-server","size":13,"devices":["cpu"],"archive":"../../../ext/plain","exec":"build/bin/llama-server"}]}`,
		`{"format":1,"entries":[{"type":"llama-server","version":"local","os":"linux","arch":"amd64","binary":"llama-server","path":"$EXT/plain","source":"registered"}]}`,
		`{"format":1,"entries":[{"type":"llama-server","version":"local","os":"linux","arch":"amd64","binary":"llama-server","path":"ext/llama-server","source":"registered"}]}`,
		`{"format":1,"entries":[{"type":"openai","version":"local","os":"linux","arch":"amd64","binary":"x","path":"$EXT/llama-server","source":"registered","added":"2025-01-01T00:00:00+01:00"}]}`,
		`{"format":1,"entries":[{"type":"cpu","version":"v1","os":"linux","arch":"amd64","binary":"rbee-worker","size":18,"added":"2025-01-01T00:00:00.123456789123Z"},{"TYPE":"cpu","Version":"v1","os":"linux","arch":"amd64","binary":"rbee-worker","size":18,"pinned":true}]}`,
		`{"format":1,"entries":[{"type":"cpu","size":"18"}]}`,
		`{"format":1,"entries":null}`, `null`, `[]`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, index []byte) {
		dir, ext := fuzzIndexDir(t)
		index = bytes.ReplaceAll(index, []byte("$EXT"), []byte(ext))
		require.NoError(t, os.WriteFile(filepath.Join(dir, indexFile), index, 0o644))
		c, err := New(Config{Dir: dir})
		for rel, body := range fuzzIndexFiles {
			b, rerr := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rel)))
			require.NoError(t, rerr, "opening the catalog removed %s", rel)
			require.Equal(t, body, string(b))
		}
		if err != nil {
			require.Nil(t, c)
			return
		}
		list := c.List()
		require.Len(t, list, len(c.entries))
		for _, e := range list {
			require.NoError(t, validNames(e.Type, e.Version, e.OS, e.Arch, false))
			require.NoError(t, ValidName("binary", e.Binary))
			if e.Source == SourceRegistered {
				require.NoError(t, checkExecutable(e.Path), "registered %s", e.key())
				continue
			}
			require.Equal(t, c.pathOf(e), e.Path, "%s: the path is derived, not read", e.key())
			for _, p := range []string{e.Path, c.stored(e)} {
				rel, err := filepath.Rel(dir, p)
				require.NoError(t, err)
				require.True(t, filepath.IsLocal(rel), "%s: %s is outside the catalog", e.key(), p)
			}
			fi, err := os.Stat(c.stored(e))
			require.NoError(t, err)
			require.True(t, fi.Mode().IsRegular())
			require.Equal(t, fi.Size(), e.Size)
			require.NoError(t, c.checkArchiveEntry(e))
			if e.Archive != "" {
				require.NoError(t, checkExecutable(e.Path))
			}
			if e.Signed {
				require.NoError(t, c.checkProof(e), "%s is signed without a proof", e.key())
			}
		}

		// Anything loaded can be written back, and reads back the same.
		c.mu.Lock()
		err = c.writeIndex(c.entries)
		c.mu.Unlock()
		require.NoError(t, err, "a loaded index does not write back")
		again, err := New(Config{Dir: dir})
		require.NoError(t, err, "a written index does not open: %s", index)
		require.Equal(t, fuzzIndexNormal(list), fuzzIndexNormal(again.List()))
	})
}

// fuzzIndexNormal sorts entries by key and makes their times UTC, for
// comparing two loads of one index (a time read as +00:00 may come back as
// Z, in another *time.Location).
func fuzzIndexNormal(es []Entry) []Entry {
	out := make([]Entry, len(es))
	for i, e := range es {
		e.Added = e.Added.UTC()
		out[i] = e
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key() < out[j].key() })
	return out
}
