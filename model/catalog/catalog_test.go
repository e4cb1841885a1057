package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee-project/rbee/model/hf/hubtest"
	"github.com/rbee-project/rbee/model/quant"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newCatalog(t *testing.T, dir string, inUse func(string) bool) *Catalog {
	t.Helper()
	cfg := DefaultConfig(dir)
	cfg.InUse = inUse
	cfg.Now = func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
	c, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func ggufBytes(t *testing.T, typ quant.Type, seed uint64) []byte {
	t.Helper()
	b, err := hubtest.GGUF("llama", 512, typ, seed)
	require.NoError(t, err)
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// writeTemp writes data into the catalog's partial directory, as a finished
// download would be.
func writeTemp(t *testing.T, c *Catalog, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(c.Dir(), PartialDir, name)
	require.NoError(t, os.WriteFile(p, data, 0o644))
	return p
}

func TestValidateID(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"hf--ggml-org--models--stories260k", true},
		{"builtin--stories260k", true},
		{"a.b_c-1", true},
		{"", false},
		{".", false},
		{"..", false},
		{".partial", false},
		{"-rf", false},
		{"../etc", false},
		{"a/b", false},
		{"a\\b", false},
		{"/abs", false},
		{"a\x00b", false},
		{"Upper", false},
		{"sp ace", false},
		{strings.Repeat("a", MaxIDLen), true},
		{strings.Repeat("a", MaxIDLen+1), false},
	} {
		err := ValidateID(tc.id)
		if tc.ok {
			require.NoError(t, err, "%q", tc.id)
		} else {
			require.ErrorIs(t, err, ErrBadName, "%q", tc.id)
		}
	}
}

func TestValidateFileName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"model.Q4_K_M.gguf", true},
		{"Modèle ünicode.gguf", true},
		{"", false},
		{".", false},
		{"..", false},
		{".hidden.gguf", false},
		{"../x.gguf", false},
		{"a/b.gguf", false},
		{"a\\b.gguf", false},
		{"/etc/passwd", false},
		{"c:x.gguf", false},
		{"a\x00.gguf", false},
		{"a\n.gguf", false},
		{"\xff.gguf", false},
		{strings.Repeat("a", MaxFileNameLen), true},
		{strings.Repeat("a", MaxFileNameLen+1), false},
	} {
		err := ValidateFileName(tc.name)
		if tc.ok {
			require.NoError(t, err, "%q", tc.name)
		} else {
			require.ErrorIs(t, err, ErrBadName, "%q", tc.name)
		}
	}
}

func TestMakeIDAndIDFor(t *testing.T) {
	require.Equal(t, "hf--ggml-org--models--tinyllamas--stories260k", IDFor(Ref{Source: SourceHF, Repo: "ggml-org/models"}, "tinyllamas/stories260K.gguf"))
	require.Equal(t, "url--example.com--model.q8_0", IDFor(Ref{Source: SourceURL, URL: "https://example.com/a/model.Q8_0.gguf"}, "model.Q8_0.gguf"))
	require.Equal(t, "local--my-model", IDFor(Ref{Source: SourceLocal, Path: "/x/My Model.gguf"}, "My Model.gguf"))
	require.Equal(t, "builtin--stories260k", IDFor(Ref{Source: SourceBuiltin, Name: "stories260k"}, ""))
	for _, hostile := range []string{"../../etc/passwd", "/abs/x", "a/b", "..", ".", "", "\x00", strings.Repeat("x/", 200)} {
		id := MakeID("local", hostile)
		require.NoError(t, ValidateID(id), "%q → %q", hostile, id)
		id = MakeID(hostile)
		require.NoError(t, ValidateID(id), "%q → %q", hostile, id)
	}
	long1, long2 := MakeID(strings.Repeat("a", 300)+"1"), MakeID(strings.Repeat("a", 300)+"2")
	require.Len(t, long1, MaxIDLen)
	require.NotEqual(t, long1, long2, "shortened ids keep a hash of the full form")
}

func TestAddGetListReopen(t *testing.T) {
	dir := t.TempDir()
	c := newCatalog(t, dir, nil)
	q4 := ggufBytes(t, quant.Q4_K, 1)
	e, err := c.Add(writeTemp(t, c, "a.part", q4), NewEntry{ID: "hf--org--repo--m-q4_k_m", Ref: "hf:org/repo/m-Q4_K_M.gguf", FileName: "m-Q4_K_M.gguf", Source: SourceHF})
	require.NoError(t, err)
	require.Equal(t, sha(q4), e.SHA256, "computed when not given")
	require.EqualValues(t, len(q4), e.Size)
	require.Equal(t, "Q4_K", e.Quantization)
	require.Equal(t, "llama", e.Architecture)
	require.EqualValues(t, 512, e.ContextLength)
	require.EqualValues(t, 256*4*2+256, e.Parameters)
	require.Equal(t, filepath.Join(dir, "hf--org--repo--m-q4_k_m", "m-Q4_K_M.gguf"), e.Path)
	got, err := os.ReadFile(e.Path)
	require.NoError(t, err)
	require.Equal(t, q4, got)
	_, err = os.Stat(filepath.Join(dir, PartialDir, "a.part"))
	require.True(t, os.IsNotExist(err), "temp file was moved")

	f16 := ggufBytes(t, quant.F16, 2)
	e2, err := c.Add(writeTemp(t, c, "b.part", f16), NewEntry{ID: "local--b", Ref: "/x/b.gguf", FileName: "b.gguf", SHA256: sha(f16), Source: SourceLocal})
	require.NoError(t, err)
	require.Equal(t, "F16", e2.Quantization)

	list, err := c.List()
	require.NoError(t, err)
	require.Equal(t, []string{"hf--org--repo--m-q4_k_m", "local--b"}, []string{list[0].ID, list[1].ID})

	found, ok := c.FindBySHA256(sha(f16))
	require.True(t, ok)
	require.Equal(t, "local--b", found.ID)
	_, ok = c.FindBySHA256(strings.Repeat("0", 64))
	require.False(t, ok)

	// Reopen: same entries, same paths.
	c2 := newCatalog(t, dir, nil)
	list2, err := c2.List()
	require.NoError(t, err)
	require.Equal(t, list, list2)
	g, err := c2.Get("local--b")
	require.NoError(t, err)
	require.Equal(t, e2, g)
}

func TestAddDuplicateAndConflict(t *testing.T) {
	c := newCatalog(t, t.TempDir(), nil)
	a := ggufBytes(t, quant.Q8_0, 1)
	b := ggufBytes(t, quant.Q8_0, 2)
	ne := NewEntry{ID: "m", Ref: "x", FileName: "m.gguf", Source: SourceLocal}
	e, err := c.Add(writeTemp(t, c, "1.part", a), ne)
	require.NoError(t, err)
	p := writeTemp(t, c, "2.part", a)
	again, err := c.Add(p, ne)
	require.NoError(t, err)
	require.Equal(t, e, again)
	_, err = os.Stat(p)
	require.True(t, os.IsNotExist(err), "duplicate temp file removed")

	p = writeTemp(t, c, "3.part", b)
	_, err = c.Add(p, ne)
	require.ErrorIs(t, err, ErrExists)
	_, err = os.Stat(p)
	require.NoError(t, err, "conflicting temp file left to the caller")
	got, _ := os.ReadFile(e.Path)
	require.Equal(t, a, got, "existing file untouched")
}

func TestAddRejectsNonGGUF(t *testing.T) {
	c := newCatalog(t, t.TempDir(), nil)
	_, err := c.Add(writeTemp(t, c, "x.part", []byte("this is not a model")), NewEntry{ID: "x", FileName: "x.gguf", Source: SourceURL})
	require.ErrorIs(t, err, ErrNotGGUF)
	list, _ := c.List()
	require.Empty(t, list)
	_, err = os.Stat(filepath.Join(c.Dir(), "x"))
	require.True(t, os.IsNotExist(err))
}

func TestHostileNames(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "models")
	c := newCatalog(t, dir, nil)
	data := ggufBytes(t, quant.Q8_0, 1)
	for _, tc := range []struct{ id, file string }{
		{"../escape", "m.gguf"},
		{"/abs", "m.gguf"},
		{"a/b", "m.gguf"},
		{"..", "m.gguf"},
		{".partial", "m.gguf"},
		{"", "m.gguf"},
		{"ok", "../../escape.gguf"},
		{"ok", "/etc/evil.gguf"},
		{"ok", "a/b.gguf"},
		{"ok", ".."},
		{"ok", "x\x00.gguf"},
		{"ok", strings.Repeat("n", 300)},
		{strings.Repeat("i", 200), "m.gguf"},
	} {
		p := writeTemp(t, c, "h.part", data)
		_, err := c.Add(p, NewEntry{ID: tc.id, FileName: tc.file, Source: SourcePeer})
		require.ErrorIs(t, err, ErrBadName, "%q %q", tc.id, tc.file)
		_, err = c.Get(tc.id)
		if tc.id != "ok" {
			require.ErrorIs(t, err, ErrBadName)
			require.ErrorIs(t, c.Delete(tc.id), ErrBadName)
		}
	}
	// Nothing was created next to the catalog directory or inside it.
	names, err := os.ReadDir(root)
	require.NoError(t, err)
	require.Len(t, names, 1)
	inside, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, n := range inside {
		require.Equal(t, PartialDir, n.Name())
	}
}

func TestDeleteRefusesInUse(t *testing.T) {
	var mu sync.Mutex
	used := map[string]bool{}
	c := newCatalog(t, t.TempDir(), func(id string) bool { mu.Lock(); defer mu.Unlock(); return used[id] })
	e, err := c.Add(writeTemp(t, c, "a.part", ggufBytes(t, quant.Q8_0, 1)), NewEntry{ID: "m", FileName: "m.gguf", Source: SourceLocal})
	require.NoError(t, err)
	mu.Lock()
	used["m"] = true
	mu.Unlock()
	require.ErrorIs(t, c.Delete("m"), ErrInUse)
	_, err = os.Stat(e.Path)
	require.NoError(t, err, "file kept")
	_, err = c.Get("m")
	require.NoError(t, err)

	mu.Lock()
	used["m"] = false
	mu.Unlock()
	require.NoError(t, c.Delete("m"))
	_, err = c.Get("m")
	require.ErrorIs(t, err, ErrNotFound)
	_, err = os.Stat(filepath.Dir(e.Path))
	require.True(t, os.IsNotExist(err), "directory removed")
	require.ErrorIs(t, c.Delete("m"), ErrNotFound)

	// The deletion is persisted.
	c2 := newCatalog(t, c.Dir(), nil)
	list, _ := c2.List()
	require.Empty(t, list)
}

func TestReopenDropsEntriesWithoutFiles(t *testing.T) {
	dir := t.TempDir()
	c := newCatalog(t, dir, nil)
	a, err := c.Add(writeTemp(t, c, "a.part", ggufBytes(t, quant.Q8_0, 1)), NewEntry{ID: "a", FileName: "a.gguf", Source: SourceLocal})
	require.NoError(t, err)
	_, err = c.Add(writeTemp(t, c, "b.part", ggufBytes(t, quant.Q8_0, 2)), NewEntry{ID: "b", FileName: "b.gguf", Source: SourceLocal})
	require.NoError(t, err)
	require.NoError(t, os.Remove(a.Path))
	c2 := newCatalog(t, dir, nil)
	list, _ := c2.List()
	require.Len(t, list, 1)
	require.Equal(t, "b", list[0].ID)
}

func TestMalformedIndexIsAnError(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, IndexFile), []byte("{not json"), 0o644))
	_, err := New(DefaultConfig(dir))
	require.ErrorContains(t, err, "malformed")
	// The error names the file and the way out.
	require.ErrorContains(t, err, filepath.Join(dir, IndexFile))
	require.ErrorContains(t, err, "move it away")
	require.NoError(t, os.WriteFile(filepath.Join(dir, IndexFile), []byte(`{"version":99,"models":[]}`), 0o644))
	_, err = New(DefaultConfig(dir))
	require.ErrorContains(t, err, "newer")
}

func TestTamperedIndexCannotEscape(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "models")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	victim := filepath.Join(root, "victim.gguf")
	require.NoError(t, os.WriteFile(victim, []byte("precious"), 0o644))
	idx := `{"version":1,"models":[{"id":"..","file_name":"victim.gguf","size":8,"sha256":"` + strings.Repeat("a", 64) + `"},
	{"id":"ok","file_name":"../victim.gguf","size":8,"sha256":"` + strings.Repeat("a", 64) + `"}]}`
	require.NoError(t, os.WriteFile(filepath.Join(dir, IndexFile), []byte(idx), 0o644))
	c := newCatalog(t, dir, nil)
	list, _ := c.List()
	require.Empty(t, list)
	require.ErrorIs(t, c.Delete(".."), ErrBadName)
	_, err := os.Stat(victim)
	require.NoError(t, err)
}

func TestDominantType(t *testing.T) {
	c := newCatalog(t, t.TempDir(), nil)
	// A "Q4_K_M"-style mix: more Q4_K matrix elements than Q6_K.
	b, err := mixedGGUF()
	require.NoError(t, err)
	e, err := c.Add(writeTemp(t, c, "m.part", b), NewEntry{ID: "mix", FileName: "mix.gguf", Source: SourceLocal})
	require.NoError(t, err)
	require.Equal(t, "Q4_K", e.Quantization)
	require.Equal(t, "qwen2", e.Architecture)
	require.EqualValues(t, 32768, e.ContextLength)
}

func TestConcurrentAddListGet(t *testing.T) {
	c := newCatalog(t, t.TempDir(), nil)
	var wg sync.WaitGroup
	for i := range 4 {
		data := ggufBytes(t, quant.Q8_0, uint64(i+10))
		p := writeTemp(t, c, "c"+string(rune('a'+i))+".part", data)
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, err := c.Add(p, NewEntry{ID: "m" + string(rune('a'+i)), FileName: "m.gguf", Source: SourceLocal})
			assert.NoError(t, err)
		}()
		go func() {
			defer wg.Done()
			_, _ = c.List()
			_, _ = c.Get("ma")
			_, _ = c.FindBySHA256(sha(data))
		}()
	}
	wg.Wait()
	list, _ := c.List()
	require.Len(t, list, 4)
}

func TestOpenRange(t *testing.T) {
	c := newCatalog(t, t.TempDir(), nil)
	data := ggufBytes(t, quant.Q8_0, 1)
	_, err := c.Add(writeTemp(t, c, "a.part", data), NewEntry{ID: "a", FileName: "a.gguf", Source: SourceLocal})
	require.NoError(t, err)
	for _, off := range []int64{0, 100, int64(len(data))} {
		rc, size, err := c.OpenRange(context.Background(), sha(data), off)
		require.NoError(t, err)
		got, err := io.ReadAll(rc)
		rc.Close()
		require.NoError(t, err)
		require.EqualValues(t, len(data), size)
		require.Equal(t, data[off:], got)
	}
	for _, off := range []int64{-1, int64(len(data)) + 1} {
		_, _, err := c.OpenRange(context.Background(), sha(data), off)
		require.Error(t, err)
	}
	_, _, err = c.OpenRange(context.Background(), strings.Repeat("0", 64), 0)
	require.ErrorIs(t, err, ErrNotFound)
	_, _, err = c.OpenRange(context.Background(), "../../etc/passwd", 0)
	require.ErrorIs(t, err, ErrNotFound)
}

// TestNewSweepsAbandonedPartials: New removes the partials not written for
// PartialMaxAge with their validators, keeps newer ones with theirs
// (however old the validator), removes validators whose partial is gone
// and other old files, and keeps everything with a negative age.
func TestNewSweepsAbandonedPartials(t *testing.T) {
	dir := t.TempDir()
	pdir := filepath.Join(dir, PartialDir)
	require.NoError(t, os.MkdirAll(pdir, 0o755))
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	files := map[string]time.Duration{
		"old.part": 8 * 24 * time.Hour, "old.part.validator": 8 * 24 * time.Hour,
		"fresh.part": time.Hour, "fresh.part.validator": time.Hour,
		// Resumed for weeks: its validator is as old as its first byte.
		"long.part": time.Hour, "long.part.validator": 30 * 24 * time.Hour,
		"orphan.part.validator": time.Hour,
		"old.tmp":               9 * 24 * time.Hour,
	}
	write := func() {
		for name, ago := range files {
			p := filepath.Join(pdir, name)
			require.NoError(t, os.WriteFile(p, []byte(name), 0o644))
			require.NoError(t, os.Chtimes(p, now.Add(-ago), now.Add(-ago)))
		}
	}
	names := func() []string {
		ents, err := os.ReadDir(pdir)
		require.NoError(t, err)
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	write()
	cfg := DefaultConfig(dir)
	cfg.Now = func() time.Time { return now }
	c, err := New(cfg)
	require.NoError(t, err)
	c.Close()
	require.ElementsMatch(t, []string{"fresh.part", "fresh.part.validator", "long.part", "long.part.validator"}, names())

	write()
	cfg.PartialMaxAge = -1
	c, err = New(cfg)
	require.NoError(t, err)
	c.Close()
	require.Len(t, names(), len(files), "a negative age keeps every partial")
}

// TestNewSweepsWhatACrashLeft: a node killed in Delete after the index was
// written (or in Add before it was) leaves a whole model directory that no
// entry lists, and an interrupted index write leaves its temporary file.
// Reopening removes both and keeps every listed model and the partials.
func TestNewSweepsWhatACrashLeft(t *testing.T) {
	dir := t.TempDir()
	c := newCatalog(t, dir, nil)
	kept, err := c.Add(writeTemp(t, c, "a.part", ggufBytes(t, quant.Q8_0, 1)), NewEntry{ID: "local--kept", FileName: "kept.gguf", Source: SourceLocal})
	require.NoError(t, err)
	gone := ggufBytes(t, quant.Q8_0, 2)
	del, err := c.Add(writeTemp(t, c, "b.part", gone), NewEntry{ID: "local--deleted", FileName: "deleted.gguf", Source: SourceLocal})
	require.NoError(t, err)
	resized, err := c.Add(writeTemp(t, c, "c.part", ggufBytes(t, quant.Q8_0, 3)), NewEntry{ID: "local--resized", FileName: "resized.gguf", Source: SourceLocal})
	require.NoError(t, err)
	require.NoError(t, os.Truncate(resized.Path, 10))
	require.NoError(t, c.Delete(del.ID))
	// The crash: the index no longer lists it, its directory is still there.
	require.NoError(t, os.MkdirAll(filepath.Dir(del.Path), 0o755))
	require.NoError(t, os.WriteFile(del.Path, gone, 0o644))
	tmpIndex := filepath.Join(dir, ".tmp-"+IndexFile+"-123")
	require.NoError(t, os.WriteFile(tmpIndex, []byte(`{"version":1,"mod`), 0o600))
	partial := writeTemp(t, c, "resume-me.part", []byte("half a download"))
	foreign := filepath.Join(dir, "lost+found")
	require.NoError(t, os.Mkdir(foreign, 0o700))
	require.NoError(t, c.Close())

	c2 := newCatalog(t, dir, nil)
	list, err := c2.List()
	require.NoError(t, err)
	require.Equal(t, []Entry{kept}, list)
	for _, p := range []string{filepath.Dir(del.Path), tmpIndex} {
		_, err := os.Stat(p)
		require.True(t, os.IsNotExist(err), "%s removed: %v", p, err)
	}
	// An entry the index names but load drops (its file changed) is not
	// listed; its file stays for the user to look at.
	for _, p := range []string{kept.Path, partial, foreign, resized.Path} {
		_, err := os.Stat(p)
		require.NoError(t, err, "%s kept", p)
	}
}
