package catalog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newCatalog(t *testing.T, dir string, mod func(*Config)) *Catalog {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Dir = dir
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	require.NoError(t, err)
	return c
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// writeTemp writes content to a file in a fresh temp dir and returns its path.
func writeTemp(t *testing.T, content []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "bin")
	require.NoError(t, os.WriteFile(p, content, 0o600))
	return p
}

// files lists the regular files under dir, relative, sorted.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	}))
	sort.Strings(out)
	return out
}

func TestAddGetAndReopen(t *testing.T) {
	dir := t.TempDir()
	c := newCatalog(t, dir, nil)
	ctx := context.Background()
	content := []byte("#!/bin/sh\necho v1\n")
	src := writeTemp(t, content)

	var progress []int64
	e, err := c.Add(ctx, AddOptions{Type: TypeCPU, Version: "v1.0.0", SHA256: sha(content), Size: int64(len(content)),
		Progress: func(done, total int64) {
			assert.Equal(t, int64(len(content)), total)
			progress = append(progress, done)
		}}, src)
	require.NoError(t, err)
	assert.Equal(t, TypeCPU, e.Type)
	assert.Equal(t, "v1.0.0", e.Version)
	assert.Equal(t, runtime.GOOS, e.OS)
	assert.Equal(t, runtime.GOARCH, e.Arch)
	assert.Equal(t, SourceAdded, e.Source)
	assert.Equal(t, int64(len(content)), e.Size)
	assert.Equal(t, sha(content), e.SHA256)
	assert.Equal(t, filepath.Join(c.Dir(), "cpu", "v1.0.0", runtime.GOOS+"-"+runtime.GOARCH, "rbee-worker"), e.Path)
	assert.False(t, e.Added.IsZero())
	require.NotEmpty(t, progress)
	assert.Equal(t, int64(len(content)), progress[len(progress)-1])

	fi, err := os.Stat(e.Path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o755), fi.Mode().Perm())
	got, err := os.ReadFile(e.Path)
	require.NoError(t, err)
	assert.Equal(t, content, got)
	_, err = os.Stat(src)
	require.NoError(t, err, "Add must not consume its source")

	// A second version, and a binary for another platform.
	content2 := []byte("#!/bin/sh\necho v2\n")
	e2, err := c.Add(ctx, AddOptions{Type: TypeCPU, Version: "v2.0.0"}, writeTemp(t, content2))
	require.NoError(t, err)
	_, err = c.Add(ctx, AddOptions{Type: TypeCPU, Version: "v2.0.0", OS: "windows", Arch: "arm64"}, writeTemp(t, content2))
	require.NoError(t, err)

	latest, err := c.Get(TypeCPU, "")
	require.NoError(t, err)
	assert.Equal(t, "v2.0.0", latest.Version)
	old, err := c.Get(TypeCPU, "v1.0.0")
	require.NoError(t, err)
	assert.Equal(t, e, old)
	win, err := c.Lookup(TypeCPU, "", "windows", "arm64")
	require.NoError(t, err)
	assert.Equal(t, "rbee-worker.exe", win.Binary)
	_, err = c.Get(TypeCPU, "v3.0.0")
	require.ErrorIs(t, err, ErrNotFound)
	_, err = c.Get("llamacpp", "")
	require.ErrorIs(t, err, ErrNotFound)
	assert.Len(t, c.List(), 3)

	rc, oe, err := c.Open(TypeCPU, "v2.0.0", runtime.GOOS, runtime.GOARCH)
	require.NoError(t, err)
	var buf bytes.Buffer
	_, err = buf.ReadFrom(rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	assert.Equal(t, content2, buf.Bytes())
	assert.Equal(t, e2, oe)

	// Reopening reads the same entries from the index.
	c2 := newCatalog(t, dir, nil)
	assert.Equal(t, normalise(c.List()), normalise(c2.List()))

	// A file changed behind the catalog's back is dropped on open.
	require.NoError(t, os.WriteFile(e.Path, []byte("tampered, longer than before......."), 0o755))
	c3 := newCatalog(t, dir, nil)
	_, err = c3.Get(TypeCPU, "v1.0.0")
	require.ErrorIs(t, err, ErrNotFound)
	assert.Len(t, c3.List(), 2)
}

// normalise strips monotonic clock readings so entries compare after a
// JSON round trip.
func normalise(es []Entry) []Entry {
	for i := range es {
		es[i].Added = es[i].Added.Round(0)
	}
	return es
}

func TestAddRejectsBadContentAndLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	c := newCatalog(t, dir, func(cfg *Config) { cfg.MaxBinarySize = 64 })
	ctx := context.Background()
	content := []byte("binary")
	tests := []struct {
		name string
		opts AddOptions
		data []byte
		want error
	}{
		{"wrong sha256", AddOptions{SHA256: sha([]byte("other"))}, content, ErrChecksum},
		{"wrong size", AddOptions{Size: 7}, content, ErrChecksum},
		{"empty", AddOptions{}, nil, ErrChecksum},
		{"too large", AddOptions{}, bytes.Repeat([]byte("x"), 65), ErrTooLarge},
		{"announced too large", AddOptions{Size: 65}, content, ErrTooLarge},
		{"malformed sha256", AddOptions{SHA256: "abc"}, content, ErrBadName},
		{"unknown type", AddOptions{Type: "llamacpp"}, content, ErrUnknownType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			if opts.Type == "" {
				opts.Type = TypeCPU
			}
			opts.Version = "v1"
			_, err := c.AddReader(ctx, opts, bytes.NewReader(tt.data))
			require.ErrorIs(t, err, tt.want)
			assert.Empty(t, c.List())
			assert.Empty(t, files(t, dir), "a rejected binary leaves no file behind")
		})
	}
	// A cancelled context stops the copy.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err := c.AddReader(cctx, AddOptions{Type: TypeCPU, Version: "v1"}, bytes.NewReader(content))
	require.ErrorIs(t, err, context.Canceled)
	assert.Empty(t, files(t, dir))
}

func TestHostileNames(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "workers")
	c := newCatalog(t, dir, nil)
	ctx := context.Background()
	bad := []string{"", ".", "..", "../x", "a/b", `a\b`, "/etc", ".hidden", "a b", "a\x00b", "-rf",
		"x\n", strings.Repeat("a", 129), "ü"}
	for _, name := range bad {
		t.Run("name="+name, func(t *testing.T) {
			r := func() *bytes.Reader { return bytes.NewReader([]byte("x")) }
			_, err := c.AddReader(ctx, AddOptions{Type: TypeCPU, Version: name}, r())
			require.ErrorIs(t, err, ErrBadName)
			if name != "" { // "" means "this machine's" for OS and Arch
				_, err = c.AddReader(ctx, AddOptions{Type: TypeCPU, Version: "v1", OS: name}, r())
				require.ErrorIs(t, err, ErrBadName)
				_, err = c.AddReader(ctx, AddOptions{Type: TypeCPU, Version: "v1", Arch: name}, r())
				require.ErrorIs(t, err, ErrBadName)
				_, err = c.AddReader(ctx, AddOptions{Type: name, Version: "v1"}, r())
				require.ErrorIs(t, err, ErrBadName)
				_, err = c.Get(TypeCPU, name)
				require.ErrorIs(t, err, ErrBadName)
				_, err = c.Delete(TypeCPU, name)
				require.ErrorIs(t, err, ErrBadName)
				_, err = c.FetchFromPeer(ctx, nil, PeerOptions{Version: name})
				require.ErrorIs(t, err, ErrBadName)
			}
			_, err = c.Delete(name, "")
			require.ErrorIs(t, err, ErrBadName)
			_, err = c.Get(name, "")
			require.ErrorIs(t, err, ErrBadName)
		})
	}
	assert.Empty(t, files(t, filepath.Dir(dir)))

	// A registry with a hostile type or binary name is refused.
	for _, wt := range []WorkerType{
		{Name: "../x", Binary: "w", Args: RbeeWorkerArgs},
		{Name: "x", Binary: "../../bin/sh", Args: RbeeWorkerArgs},
		{Name: "x", Binary: "w"},
		{Name: "x", Binary: SumsFile, Args: RbeeWorkerArgs},
		{Name: "x", Binary: SigFile, Args: RbeeWorkerArgs},
	} {
		cfg := DefaultConfig()
		cfg.Dir = t.TempDir()
		cfg.Types = []WorkerType{wt}
		_, err := New(cfg)
		require.ErrorIs(t, err, ErrBadName)
	}
}

func TestHostileIndexCannotEscape(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	require.NoError(t, os.WriteFile(victim, []byte("precious"), 0o644))
	index := `{"format":1,"entries":[{"type":"cpu","version":"../../..","os":"linux","arch":"amd64","binary":"x","path":"` +
		victim + `","size":8},{"type":"cpu","version":"v1","os":"linux","arch":"amd64","binary":"../../victim","path":"` + victim + `","size":8}]}`
	require.NoError(t, os.WriteFile(filepath.Join(dir, indexFile), []byte(index), 0o644))
	c := newCatalog(t, dir, nil)
	assert.Empty(t, c.List())
	_, err := c.Delete(TypeCPU, "")
	require.ErrorIs(t, err, ErrNotFound)
	b, err := os.ReadFile(victim)
	require.NoError(t, err)
	assert.Equal(t, "precious", string(b))

	require.NoError(t, os.WriteFile(filepath.Join(dir, indexFile), []byte("{not json"), 0o644))
	_, err = New(Config{Dir: dir})
	require.Error(t, err)
	// The error names the file (its full path) and the way out.
	require.ErrorContains(t, err, filepath.Join(dir, indexFile))
	require.ErrorContains(t, err, "move it away")
}

func TestDeleteRefusesInUse(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	busy := map[string]bool{}
	c := newCatalog(t, dir, func(cfg *Config) {
		cfg.InUse = func(e Entry) bool {
			mu.Lock()
			defer mu.Unlock()
			return busy[e.Path]
		}
	})
	ctx := context.Background()
	e1, err := c.Add(ctx, AddOptions{Type: TypeCPU, Version: "v1"}, writeTemp(t, []byte("one")))
	require.NoError(t, err)
	e2, err := c.Add(ctx, AddOptions{Type: TypeCPU, Version: "v2"}, writeTemp(t, []byte("two")))
	require.NoError(t, err)

	mu.Lock()
	busy[e1.Path] = true
	mu.Unlock()
	_, err = c.Delete(TypeCPU, "v1")
	require.ErrorIs(t, err, ErrInUse)
	_, err = c.Delete(TypeCPU, "") // all versions: one is busy, so none goes
	require.ErrorIs(t, err, ErrInUse)
	assert.FileExists(t, e1.Path)
	assert.FileExists(t, e2.Path)
	assert.Len(t, c.List(), 2)

	gone, err := c.Delete(TypeCPU, "v2")
	require.NoError(t, err)
	require.Len(t, gone, 1)
	assert.Equal(t, "v2", gone[0].Version)
	assert.NoFileExists(t, e2.Path)
	assert.NoDirExists(t, filepath.Join(dir, "cpu", "v2"), "empty directories are pruned")

	mu.Lock()
	busy[e1.Path] = false
	mu.Unlock()
	gone, err = c.Delete(TypeCPU, "")
	require.NoError(t, err)
	require.Len(t, gone, 1)
	assert.Equal(t, []string{indexFile}, files(t, dir))
	_, err = c.Delete(TypeCPU, "")
	require.ErrorIs(t, err, ErrNotFound)
	assert.Empty(t, newCatalog(t, dir, nil).List())
}

func TestConcurrentAddAndDelete(t *testing.T) {
	dir := t.TempDir()
	c := newCatalog(t, dir, nil)
	ctx := context.Background()
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := "v" + string(rune('a'+i))
			content := []byte(strings.Repeat(v, 1000))
			if _, err := c.AddReader(ctx, AddOptions{Type: TypeCPU, Version: v, SHA256: sha(content)}, bytes.NewReader(content)); err != nil {
				errs <- err
				return
			}
			// The same key written twice concurrently stays consistent.
			if _, err := c.AddReader(ctx, AddOptions{Type: TypeCPU, Version: "same"}, bytes.NewReader(content)); err != nil {
				errs <- err
			}
			_ = c.List()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	list := c.List()
	require.Len(t, list, n+1)
	for _, e := range list {
		got, err := os.ReadFile(e.Path)
		require.NoError(t, err)
		assert.Equal(t, e.SHA256, sha(got), "index and file agree for %s", e.Version)
	}
	assert.Len(t, newCatalog(t, dir, nil).List(), n+1)
	for i := 0; i < n; i += 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Delete(TypeCPU, "v"+string(rune('a'+i)))
			assert.NoError(t, err)
		}()
	}
	wg.Wait()
	assert.Len(t, newCatalog(t, dir, nil).List(), n/2+1)
}

func TestLeftoverTempFilesRemoved(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "cpu", "v1", "linux-amd64"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cpu", "v1", "linux-amd64", tmpPrefix+"rbee-worker-123"), []byte("x"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, tmpPrefix+"build-1", "bin"), 0o755))
	newCatalog(t, dir, nil)
	for _, f := range files(t, dir) {
		assert.NotContains(t, f, tmpPrefix)
	}
}

func TestTypes(t *testing.T) {
	llama := WorkerType{Name: "llamacpp", Binary: "llama-server", HealthPath: "/health",
		Args: func(l Launch) []string { return []string{"-m", l.ModelPath} }}
	c := newCatalog(t, t.TempDir(), func(cfg *Config) { cfg.Types = append(DefaultTypes(), llama) })
	got, err := c.Type("llamacpp")
	require.NoError(t, err)
	assert.False(t, got.Buildable())
	cpu, err := c.Type(TypeCPU)
	require.NoError(t, err)
	assert.True(t, cpu.Buildable())
	var names []string
	for _, ty := range c.Types() {
		names = append(names, ty.Name)
	}
	assert.Equal(t, []string{"cpu", "llama-server", "vllm", "ollama", "openai", "llamacpp"}, names)
	_, err = c.Type("cuda")
	require.ErrorIs(t, err, ErrUnknownType)
	require.ErrorContains(t, err, `"cuda" (known: cpu, llama-server, vllm, ollama, openai, llamacpp)`, "the error lists the types")
	_, err = c.Build(context.Background(), BuildOptions{Type: "llamacpp", SourceDir: "."})
	require.ErrorIs(t, err, ErrNotBuildable)

	assert.Equal(t, []string{"--model", "m.gguf", "--port", "8080", "--id", "w1"},
		RbeeWorkerArgs(Launch{ModelPath: "m.gguf", Port: 8080, WorkerID: "w1"}))
	assert.Equal(t, []string{"--model", "m.gguf", "--port", "1", "--id", "w", "--host", "127.0.0.1", "--node", "http://n",
		"--device", "cpu", "--threads", "2", "--slots", "3", "--ctx", "512"},
		RbeeWorkerArgs(Launch{ModelPath: "m.gguf", Port: 1, WorkerID: "w", Host: "127.0.0.1", NodeURL: "http://n", Device: "cpu", Threads: 2, Slots: 3, Ctx: 512}))
	_, err = New(Config{Dir: t.TempDir(), Types: []WorkerType{CPUType(), CPUType()}})
	require.ErrorIs(t, err, ErrBadName)
}

// withBrokenIndex runs f while the catalog in dir cannot write its index
// (a directory stands where index.json goes), then puts the index back.
func withBrokenIndex(t *testing.T, dir string, f func()) {
	t.Helper()
	idx := filepath.Join(dir, indexFile)
	saved, err := os.ReadFile(idx)
	require.NoError(t, err)
	require.NoError(t, os.Remove(idx))
	require.NoError(t, os.Mkdir(idx, 0o755))
	f()
	require.NoError(t, os.Remove(idx))
	require.NoError(t, os.WriteFile(idx, saved, 0o644))
}

// TestReplaceRestoredWhenTheIndexCannotBeWritten: replacing a binary
// (same type, version and platform) whose index write fails leaves the
// old binary in place, and the catalog and the index both describe it.
func TestReplaceRestoredWhenTheIndexCannotBeWritten(t *testing.T) {
	dir := t.TempDir()
	c := newCatalog(t, dir, nil)
	ctx := context.Background()
	v1, v1b := []byte("#!/bin/sh\necho one\n"), []byte("#!/bin/sh\necho another one\n")
	e, err := c.Add(ctx, AddOptions{Type: TypeCPU, Version: "v1.0.0"}, writeTemp(t, v1))
	require.NoError(t, err)
	withBrokenIndex(t, dir, func() {
		_, err := c.Add(ctx, AddOptions{Type: TypeCPU, Version: "v1.0.0"}, writeTemp(t, v1b))
		require.Error(t, err)
	})
	got, err := os.ReadFile(e.Path)
	require.NoError(t, err)
	require.Equal(t, v1, got, "the old binary is back")
	cur, err := c.Get(TypeCPU, "v1.0.0")
	require.NoError(t, err)
	require.Equal(t, sha(v1), cur.SHA256)
	for _, f := range files(t, dir) {
		require.NotContains(t, f, tmpPrefix)
	}
	re := newCatalog(t, dir, nil)
	cur, err = re.Get(TypeCPU, "v1.0.0")
	require.NoError(t, err)
	require.Equal(t, sha(v1), cur.SHA256)

	// With the index writable again the replacement goes through.
	e2, err := c.Add(ctx, AddOptions{Type: TypeCPU, Version: "v1.0.0"}, writeTemp(t, v1b))
	require.NoError(t, err)
	got, err = os.ReadFile(e2.Path)
	require.NoError(t, err)
	require.Equal(t, v1b, got)
	for _, f := range files(t, dir) {
		require.NotContains(t, f, tmpPrefix)
	}
}

// TestReplaceFailingBeforeCommitLeavesNothingAside: a replacement that
// fails before its file is committed (here its release proof cannot be
// written) leaves the old binary as it was and nothing kept aside, so a
// later Delete leaves the directory empty.
func TestReplaceFailingBeforeCommitLeavesNothingAside(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := newCatalog(t, dir, trustA)
	v1, v1b := []byte("#!/bin/sh\necho one\n"), []byte("#!/bin/sh\necho signed one\n")
	e, err := c.Add(ctx, AddOptions{Type: TypeCPU, Version: "v1.0.0"}, writeTemp(t, v1))
	require.NoError(t, err)
	asset := AssetName(CPUType(), runtime.GOOS, runtime.GOARCH)
	sums := []byte(fmt.Sprintf("%s  %s\n", sha(v1b), asset))
	proof := ReleaseProof{Sums: sums, Sig: sign(t, keyA, "v1.0.0", sums)}
	// A non-empty directory where the signature goes: the proof write fails.
	blocker := filepath.Join(c.entryDir(e), SigFile)
	require.NoError(t, os.MkdirAll(filepath.Join(blocker, "x"), 0o755))
	_, err = c.AddReader(ctx, AddOptions{Type: TypeCPU, Version: "v1.0.0", Release: &proof}, bytes.NewReader(v1b))
	require.Error(t, err)
	got, err := os.ReadFile(e.Path)
	require.NoError(t, err)
	require.Equal(t, v1, got)
	require.NoError(t, os.RemoveAll(blocker))
	for _, f := range files(t, dir) {
		require.NotContains(t, f, tmpPrefix)
	}
	_, err = c.Delete(TypeCPU, "v1.0.0")
	require.NoError(t, err)
	require.Equal(t, []string{indexFile}, files(t, dir))
}
