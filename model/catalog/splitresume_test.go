package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/hf"
)

// splitHub puts stories260K split in n parts on f's Hub as org/big
// s-Q8_0-0000i-of-0000n.gguf and returns the parts' bytes.
func splitHub(t *testing.T, f *fixture, n int) [][]byte {
	t.Helper()
	_, parts := splitStories(t, t.TempDir(), "s", n, false)
	for i, b := range parts {
		f.hub.AddFile("org/big", gguf.SplitPath("s-Q8_0", i, n), b)
	}
	return parts
}

// diskBytes is the bytes of every file under dir.
func diskBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed while walked
		}
		if err != nil || d.IsDir() {
			return err
		}
		if info, err := d.Info(); err == nil {
			n += info.Size()
		}
		return nil
	}))
	return n
}

// journalMerged is how many parts the journal of the one merge under way
// in c says the merged file holds, -1 when there is no journal.
func journalMerged(t *testing.T, c *Catalog) int {
	t.Helper()
	js, err := filepath.Glob(filepath.Join(c.Dir(), PartialDir, "*"+journalSuffix))
	require.NoError(t, err)
	if len(js) == 0 {
		return -1
	}
	require.Len(t, js, 1)
	b, err := os.ReadFile(js[0])
	require.NoError(t, err)
	var j mergeJournal
	require.NoError(t, json.Unmarshal(b, &j))
	return j.Merged
}

// requireNothingStored checks that c has no entry and no model directory:
// whatever a stopped fetch left is in PartialDir.
func requireNothingStored(t *testing.T, c *Catalog) {
	t.Helper()
	list, err := c.List()
	require.NoError(t, err)
	require.Empty(t, list)
	ents, err := os.ReadDir(c.Dir())
	require.NoError(t, err)
	for _, e := range ents {
		require.Contains(t, []string{PartialDir, IndexFile}, e.Name(), "nothing half-written in the catalog")
	}
}

// TestSplitFetchPeakDisk: while a split model downloads and merges, the
// catalog's directory never holds more than the merged file, its largest
// part and the headers of the parts still to come (each at most the first
// read of a header): not the parts and the merged file together.
func TestSplitFetchPeakDisk(t *testing.T) {
	const n = 4
	f := newFixture(t, "")
	parts := splitHub(t, f, n)
	var largest int64
	for _, b := range parts {
		largest = max(largest, int64(len(b)))
	}
	var peak int64
	e, err := f.fetch(t, "hf:org/big:Q8_0", FetchOptions{ProgressInterval: time.Nanosecond, Progress: func(Progress) {
		peak = max(peak, diskBytes(t, f.cat.Dir()))
	}})
	require.NoError(t, err)
	require.Equal(t, stories260KSHA, e.SHA256)
	bound := e.Size + largest + (n-1)*headFirstRead + 4<<10 // + the journal and the index
	require.LessOrEqual(t, peak, bound, "peak %d bytes on disk; merged %d, largest part %d", peak, e.Size, largest)
	require.Greater(t, peak, e.Size, "measured while the last part was merged")
}

// TestSplitFetchStoppedAtEachPart: a fetch of a split set cancelled while
// the parts' headers download, and while each part's data is merged (the
// merged file then holds bytes its journal does not count), stores
// nothing; the next fetch resumes: the model's own bytes and sha256, and
// no byte of any part asked for twice (the parts merged before are not
// asked for at all). The same for a set by the Hub and by URL.
func TestSplitFetchStoppedAtEachPart(t *testing.T) {
	const n = 3
	for stopAt := 0; stopAt < n; stopAt++ {
		for _, byURL := range []bool{false, true} {
			t.Run("merged "+strconv.Itoa(stopAt)+" url "+strconv.FormatBool(byURL), func(t *testing.T) {
				f := newFixture(t, "")
				splitHub(t, f, n)
				ref := "hf:org/big:Q8_0"
				if byURL {
					ref = f.hub.URL() + "/org/big/resolve/main/" + gguf.SplitPath("s-Q8_0", 0, n)
				}
				stoppedAt(t, f, ref, stopAt)
			})
		}
	}
}

// stoppedAt is one case of TestSplitFetchStoppedAtEachPart: the fetch of
// ref stopped in the middle of the merge of part stopAt+1, then again.
func stoppedAt(t *testing.T, f *fixture, ref string, stopAt int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := ParseRef(ref)
	require.NoError(t, err)
	_, err = f.cat.Fetch(ctx, r, FetchOptions{HF: f.client, ProgressInterval: time.Nanosecond, Progress: func(p Progress) {
		if p.Merging && journalMerged(t, f.cat) == stopAt {
			cancel()
		}
	}})
	require.ErrorIs(t, err, context.Canceled)
	requireNothingStored(t, f.cat)
	require.Equal(t, stopAt, journalMerged(t, f.cat))

	before := len(f.cdnGets())
	e, err := f.fetch(t, ref, FetchOptions{})
	require.NoError(t, err)
	require.Equal(t, stories260KSHA, e.SHA256)
	require.Equal(t, 3, e.Parts)
	requireNoByteTwice(t, f.cdnGets())
	for _, g := range f.cdnGets()[before:] {
		for i := range stopAt {
			require.NotContains(t, g.Path, shaOfPart(t, f, i), "part %d was merged before the stop", i+1)
		}
	}
	require.Empty(t, partials(t, f.cat))
}

// shaOfPart is the LFS sha256 of part i of org/big.
func shaOfPart(t *testing.T, f *fixture, i int) string {
	t.Helper()
	files, err := f.client.ListFiles(context.Background(), "org/big", "main")
	require.NoError(t, err)
	for _, file := range files {
		if _, k, _, ok := gguf.ParseSplitName(file.Path); ok && k == i {
			return file.SHA256
		}
	}
	t.Fatalf("no part %d", i+1)
	return ""
}

// childEnv names the catalog directory and Hub of TestSplitFetchKilled's
// child process; its marker file is written when it is about to be killed.
const (
	childDirEnv    = "RBEE_TEST_SPLIT_CHILD_DIR"
	childHubEnv    = "RBEE_TEST_SPLIT_CHILD_HUB"
	childMarkerEnv = "RBEE_TEST_SPLIT_CHILD_MARKER"
)

// TestSplitFetchKilledChild is the child of TestSplitFetchKilled: it
// fetches the set and, in the middle of the merge of part 2, says so and
// waits to be killed.
func TestSplitFetchKilledChild(t *testing.T) {
	dir := os.Getenv(childDirEnv)
	if dir == "" {
		t.Skip("the child process of TestSplitFetchKilled")
	}
	cfg := hf.DefaultConfig()
	cfg.Endpoint = os.Getenv(childHubEnv)
	client, err := hf.New(cfg)
	require.NoError(t, err)
	c, err := New(DefaultConfig(dir))
	require.NoError(t, err)
	r, err := ParseRef("hf:org/big:Q8_0")
	require.NoError(t, err)
	_, err = c.Fetch(context.Background(), r, FetchOptions{HF: client, ProgressInterval: time.Nanosecond, Progress: func(p Progress) {
		if p.Merging && journalMerged(t, c) == 1 {
			require.NoError(t, os.WriteFile(os.Getenv(childMarkerEnv), nil, 0o644))
			select {} // killed here
		}
	}})
	t.Fatalf("the fetch ended: %v", err)
}

// TestSplitFetchKilled: a node process killed (SIGKILL) in the middle of
// merging a split model's second part leaves nothing in the catalog; the
// next fetch resumes the merge: the model's bytes, no part downloaded
// twice, the first part not asked for again.
func TestSplitFetchKilled(t *testing.T) {
	const n = 3
	f := newFixture(t, "")
	splitHub(t, f, n)
	dir := f.cat.Dir()
	require.NoError(t, f.cat.Close())
	marker := filepath.Join(t.TempDir(), "merging")
	cmd := exec.Command(os.Args[0], "-test.run=^TestSplitFetchKilledChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childDirEnv+"="+dir, childHubEnv+"="+f.hub.URL(), childMarkerEnv+"="+marker)
	require.NoError(t, cmd.Start())
	require.Eventually(t, func() bool {
		_, err := os.Stat(marker)
		return err == nil
	}, time.Minute, 10*time.Millisecond, "the child reaches the merge of part 2")
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()

	c := newCatalog(t, dir, nil)
	requireNothingStored(t, c)
	require.Equal(t, 1, journalMerged(t, c))
	before := len(f.cdnGets())
	f.cat = c
	e, err := f.fetch(t, "hf:org/big:Q8_0", FetchOptions{})
	require.NoError(t, err)
	require.Equal(t, stories260KSHA, e.SHA256)
	requireNoByteTwice(t, f.cdnGets())
	first := shaOfPart(t, f, 0)
	for _, g := range f.cdnGets()[before:] {
		require.NotContains(t, g.Path, first, "part 1 was merged before the kill")
	}
	require.Empty(t, partials(t, c))
}

// TestFetchSplitByURL: a split model named by the URL of its first part
// (the other parts next to it, named as llama.cpp names them) is fetched
// and merged like a Hub set: the model's bytes, no byte asked for twice,
// a #sha256= checked against the merged file; a later part's URL is
// refused naming the first's, and a missing part is named; neither stores
// nor downloads anything.
func TestFetchSplitByURL(t *testing.T) {
	const n = 3
	base := func(f *fixture) string { return f.hub.URL() + "/org/big/resolve/main/" }
	t.Run("merged", func(t *testing.T) {
		f := newFixture(t, "")
		splitHub(t, f, n)
		var last Progress
		e, err := f.fetch(t, base(f)+gguf.SplitPath("s-Q8_0", 0, n), FetchOptions{Progress: func(p Progress) { last = p }})
		require.NoError(t, err)
		require.Equal(t, stories260KSHA, e.SHA256)
		require.Equal(t, n, e.Parts)
		require.Equal(t, "s-Q8_0.gguf", e.FileName)
		require.Equal(t, SourceURL, e.Source)
		require.True(t, last.Merging)
		require.Equal(t, e.Size, last.Done)
		requireNoByteTwice(t, f.cdnGets())
		require.Empty(t, partials(t, f.cat))

		// The sha256 of a set by URL is the merged file's.
		again, err := f.fetch(t, e.Ref+"#sha256="+stories260KSHA, FetchOptions{})
		require.NoError(t, err)
		require.Equal(t, e.ID, again.ID)
	})
	t.Run("wrong sha256", func(t *testing.T) {
		f := newFixture(t, "")
		splitHub(t, f, n)
		_, err := f.fetch(t, base(f)+gguf.SplitPath("s-Q8_0", 0, n)+"#sha256="+strings.Repeat("0", 64), FetchOptions{})
		require.ErrorIs(t, err, hf.ErrChecksum)
		require.ErrorContains(t, err, "the merged file's sha256 is "+stories260KSHA)
		requireNothingStored(t, f.cat)
		require.Empty(t, partials(t, f.cat))
	})
	t.Run("refused", func(t *testing.T) {
		f := newFixture(t, "")
		parts := splitHub(t, f, n)
		f.hub.AddFile("org/gap", gguf.SplitPath("s-Q8_0", 0, n), parts[0])
		f.hub.AddFile("org/gap", gguf.SplitPath("s-Q8_0", 2, n), parts[2])
		_, err := f.fetch(t, base(f)+gguf.SplitPath("s-Q8_0", 1, n), FetchOptions{})
		require.ErrorIs(t, err, ErrBadRef)
		require.ErrorContains(t, err, "is part 2 of 3 of a split model; a split model is named by its first part, "+base(f)+gguf.SplitPath("s-Q8_0", 0, n))
		require.Empty(t, f.cdnGets())

		_, err = f.fetch(t, f.hub.URL()+"/org/gap/resolve/main/"+gguf.SplitPath("s-Q8_0", 0, n), FetchOptions{Retries: -1})
		require.ErrorIs(t, err, hf.ErrNotFound)
		require.ErrorContains(t, err, "part 2 of 3, s-Q8_0-00002-of-00003.gguf")
		requireNothingStored(t, f.cat)
	})
}
