package catalog

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/engine"
	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/hf"
	"github.com/rbee-project/rbee/model/hf/hubtest"
)

const storiesPath = "../../testdata/model/stories260K.gguf"

// splitStories writes stories260K as n parts named dir/prefix-0000i-of-0000n.gguf
// (with no tensor in the first when meta) and returns their paths and bytes.
func splitStories(t *testing.T, dir, prefix string, n int, meta bool) ([]string, [][]byte) {
	t.Helper()
	src, err := gguf.Open(storiesPath)
	require.NoError(t, err)
	defer src.Close()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	paths, err := gguf.Split(src, filepath.Join(dir, prefix), n, gguf.SplitOptions{MetadataOnlyFirst: meta})
	require.NoError(t, err)
	var data [][]byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		data = append(data, b)
	}
	return paths, data
}

// greedyIDs is what the engine generates for a prompt from the model at path.
func greedyIDs(t *testing.T, path string) []int32 {
	t.Helper()
	m, err := engine.Load(path, engine.Options{Threads: 1})
	require.NoError(t, err)
	defer m.Close()
	ids := m.Tokenizer().Encode("Once upon a time", m.Tokenizer().AddBOS(), false)
	var out []int32
	_, err = m.NewSession().Generate(context.Background(), engine.GenerateRequest{Prompt: ids, MaxTokens: 6}, func(tok engine.Token) error {
		if tok.ID >= 0 {
			out = append(out, tok.ID)
		}
		return nil
	})
	require.NoError(t, err)
	require.NotEmpty(t, out)
	return out
}

// TestFetchSplitFromHub: a model gguf-split cut in parts (stories260K in
// 3, and in 2 with a tensor-less first part, as large quantizations come
// on the Hub) is downloaded by hf:ORG/REPO:QUANT and by its first part's
// path, part by part, and stored merged as one ordinary file (the
// original's bytes, so its sha256) that the engine runs as the unsplit
// model; the parts' partials are gone, the entry names its first part and
// how many there were, and survives a reopen of the catalog.
func TestFetchSplitFromHub(t *testing.T) {
	want := greedyIDs(t, storiesPath)
	for _, tc := range []struct {
		name string
		n    int
		meta bool
	}{{"3 parts", 3, false}, {"tensor-less first part", 2, true}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, "")
			_, parts := splitStories(t, t.TempDir(), "stories-Q8_0", tc.n, tc.meta)
			var total int64
			for i, b := range parts {
				f.hub.AddFile("org/big", gguf.SplitPath("Q8_0/stories-Q8_0", i, tc.n), b)
				total += int64(len(b))
			}
			var last, lastDownload Progress
			e, err := f.fetch(t, "hf:org/big:Q8_0", FetchOptions{Progress: func(p Progress) {
				last = p
				if !p.Merging {
					lastDownload = p
				}
			}})
			require.NoError(t, err)
			require.Equal(t, "hf--org--big--q8_0--stories-q8_0", e.ID)
			require.Equal(t, "stories-Q8_0.gguf", e.FileName)
			require.Equal(t, gguf.SplitPath("hf:org/big/Q8_0/stories-Q8_0", 0, tc.n), e.Ref)
			require.Equal(t, tc.n, e.Parts)
			require.Equal(t, stories260KSHA, e.SHA256, "the merged file is the model's own bytes")
			require.Equal(t, SourceHF, e.Source)
			require.Equal(t, "F32", e.Quantization)
			require.Equal(t, total, lastDownload.Done, "download progress covers every part")
			require.Equal(t, total, lastDownload.Total)
			require.True(t, last.Merging)
			require.Equal(t, e.Size, last.Done, "then the merge's")
			require.Equal(t, e.Size, last.Total)
			require.Empty(t, partials(t, f.cat), "the parts go once merged")
			require.Equal(t, want, greedyIDs(t, e.Path))

			// The first part's path names the same entry: nothing is downloaded again.
			gets := len(f.cdnGets())
			again, err := f.fetch(t, e.Ref, FetchOptions{})
			require.NoError(t, err)
			require.Equal(t, e.ID, again.ID)
			require.Len(t, f.cdnGets(), gets)

			reopened := newCatalog(t, f.cat.Dir(), nil)
			got, err := reopened.Get(e.ID)
			require.NoError(t, err)
			require.Equal(t, tc.n, got.Parts)
		})
	}
}

// TestFetchSplitResumesAPart: a set cut in the middle of its second part
// stores nothing; what was downloaded stays, and the next fetch asks for
// no byte of any part a second time: each request of a part starts where
// the part's bytes on disk end.
func TestFetchSplitResumesAPart(t *testing.T) {
	f := newFixture(t, "")
	_, parts := splitStories(t, t.TempDir(), "s", 3, false)
	var shas []string
	for i, b := range parts {
		shas = append(shas, f.hub.AddFile("org/big", gguf.SplitPath("s-Q8_0", i, 3), b))
	}
	f.hub.CutNext(shas[1], 1000)
	_, err := f.fetch(t, "hf:org/big:Q8_0", FetchOptions{Retries: -1})
	require.Error(t, err)
	require.Contains(t, err.Error(), "part 2 of 3, s-Q8_0-00002-of-00003.gguf")
	list, _ := f.cat.List()
	require.Empty(t, list)
	require.Len(t, partials(t, f.cat), 2, "part 1's header, part 2 cut")

	e, err := f.fetch(t, "hf:org/big:Q8_0", FetchOptions{})
	require.NoError(t, err)
	require.Equal(t, stories260KSHA, e.SHA256)
	requireNoByteTwice(t, f.cdnGets())
	require.Contains(t, f.cdnGets(), hubtest.Request{Server: "cdn", Method: "GET", Path: "/blobs/" + shas[1], Range: "bytes=1000-"})
	require.Empty(t, partials(t, f.cat))
}

// requireNoByteTwice checks that no part was asked for twice from the same
// offset or from before where an earlier request of it started: each
// request of a file resumes after the bytes already on disk.
func requireNoByteTwice(t *testing.T, gets []hubtest.Request) {
	t.Helper()
	from := map[string]int64{}
	for _, g := range gets {
		var at int64
		if g.Range != "" {
			_, err := fmt.Sscanf(g.Range, "bytes=%d-", &at)
			require.NoError(t, err, g.Range)
		}
		if last, ok := from[g.Path]; ok {
			require.Greater(t, at, last, "%s asked for again from byte %d: %v", g.Path, at, gets)
		}
		from[g.Path] = at
	}
}

// TestFetchSplitRefusesBadSets: a set with a part missing from the repo, a
// later part named, or parts that do not make one model is refused with an
// error naming the part, and nothing is stored or left behind.
func TestFetchSplitRefusesBadSets(t *testing.T) {
	f := newFixture(t, "")
	_, parts := splitStories(t, t.TempDir(), "s", 3, false)
	_, other := splitStories(t, t.TempDir(), "o", 2, false)
	for i, b := range parts {
		if i != 2 {
			f.hub.AddFile("org/gap", gguf.SplitPath("s", i, 3), b)
		}
	}
	// A second part from another split of the model: split.count 2, not 3.
	f.hub.AddFile("org/mixed", gguf.SplitPath("s", 0, 3), parts[0])
	f.hub.AddFile("org/mixed", gguf.SplitPath("s", 1, 3), other[1])
	f.hub.AddFile("org/mixed", gguf.SplitPath("s", 2, 3), parts[2])
	for _, tc := range []struct {
		ref string
		err error
		msg string
	}{
		{"hf:org/gap/s-00001-of-00003.gguf", hf.ErrNotFound, "the repo has no s-00003-of-00003.gguf"},
		{"hf:org/gap/s-00002-of-00003.gguf", hf.ErrNoGGUF, "name its first part, s-00001-of-00003.gguf"},
		{"hf:org/mixed", ErrNotGGUF, "part 2 of 3 says the model has 2 parts"},
	} {
		_, err := f.fetch(t, tc.ref, FetchOptions{})
		require.ErrorIs(t, err, tc.err, tc.ref)
		require.ErrorContains(t, err, tc.msg)
	}
	list, _ := f.cat.List()
	require.Empty(t, list)
	require.Empty(t, partials(t, f.cat))
}

// TestFetchSplitLocal: a local first part brings its set (the parts next
// to it) into the catalog merged; a later part names the first; a missing
// part is named and nothing is stored.
func TestFetchSplitLocal(t *testing.T) {
	c := newCatalog(t, t.TempDir(), nil)
	dir := t.TempDir()
	paths, _ := splitStories(t, dir, "stories", 3, false)
	fetch := func(ref string) (Entry, error) {
		r, err := ParseRef(ref)
		require.NoError(t, err)
		return c.Fetch(context.Background(), r, FetchOptions{})
	}
	_, err := fetch(paths[1])
	require.ErrorIs(t, err, ErrNotGGUF)
	require.ErrorContains(t, err, "is part 2 of 3; a split model is named by its first part, "+paths[0])

	e, err := fetch(paths[0])
	require.NoError(t, err)
	require.Equal(t, "local--stories", e.ID)
	require.Equal(t, paths[0], e.Ref)
	require.Equal(t, 3, e.Parts)
	require.Equal(t, SourceLocal, e.Source)
	require.Equal(t, stories260KSHA, e.SHA256)
	for _, p := range paths {
		require.FileExists(t, p, "a local part is read in place, never moved")
	}
	require.NoError(t, c.Delete(e.ID))

	require.NoError(t, os.Remove(paths[2]))
	_, err = fetch(paths[0])
	require.ErrorIs(t, err, os.ErrNotExist)
	require.ErrorContains(t, err, "part 3 of 3")
	list, _ := c.List()
	require.Empty(t, list)
	require.Empty(t, partials(t, c))
}

// TestMergeCancelledLeavesNothing: a merge of a local set stopped part way
// leaves no merged file and no entry; a merged file without a journal (and
// a journal without its merged file) is swept when the catalog opens,
// however new; a merge with its journal stays for the next fetch.
func TestMergeCancelledLeavesNothing(t *testing.T) {
	c := newCatalog(t, t.TempDir(), nil)
	paths, _ := splitStories(t, t.TempDir(), "stories", 2, false)
	r, err := ParseRef(paths[0])
	require.NoError(t, err)
	tg, err := c.resolve(context.Background(), r, FetchOptions{})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err = c.fetchSplit(ctx, tg, FetchOptions{ProgressInterval: 1, Progress: func(p Progress) {
		if p.Done > 0 {
			cancel()
		}
	}}, "stories-set")
	require.ErrorIs(t, err, context.Canceled)
	list, _ := c.List()
	require.Empty(t, list)
	require.Empty(t, partials(t, c))

	left := filepath.Join(c.Dir(), PartialDir, "crashed"+mergeSuffix)
	require.NoError(t, os.WriteFile(left, []byte("GGUF half"), 0o644))
	orphan := filepath.Join(c.Dir(), PartialDir, "gone"+mergeSuffix+journalSuffix)
	require.NoError(t, os.WriteFile(orphan, []byte("{}"), 0o644))
	// A merge with its journal is resumed by the next fetch: kept.
	kept := filepath.Join(c.Dir(), PartialDir, "resumable"+mergeSuffix)
	require.NoError(t, os.WriteFile(kept, []byte("GGUF half"), 0o644))
	require.NoError(t, os.WriteFile(kept+journalSuffix, []byte("{}"), 0o644))
	cfg := DefaultConfig(c.Dir())
	cfg.PartialMaxAge = -1 // partials kept for good: a merge still goes
	_, err = New(cfg)
	require.NoError(t, err)
	require.NoFileExists(t, left)
	require.NoFileExists(t, orphan)
	require.FileExists(t, kept)
	require.FileExists(t, kept+journalSuffix)
}
