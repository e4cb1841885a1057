package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/hf"
	"github.com/rbee-project/rbee/model/hf/hubtest"
	"github.com/rbee-project/rbee/model/quant"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const stories260KSHA = "270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d"

type fixture struct {
	hub    *hubtest.Hub
	client *hf.Client
	cat    *Catalog
	q4     []byte // org/repo model-Q4_K_M.gguf
	q8     []byte // org/repo model-Q8_0.gguf
	f16    []byte // org/repo sub/model-F16.gguf
}

func newFixture(t *testing.T, token string) *fixture {
	t.Helper()
	f := &fixture{hub: hubtest.New()}
	t.Cleanup(f.hub.Close)
	f.q4 = ggufBytes(t, quant.Q4_K, 1)
	f.q8 = ggufBytes(t, quant.Q8_0, 2)
	f.f16 = ggufBytes(t, quant.F16, 3)
	f.hub.AddFile("org/repo", "model-Q4_K_M.gguf", f.q4)
	f.hub.AddFile("org/repo", "model-Q8_0.gguf", f.q8)
	f.hub.AddFile("org/repo", "sub/model-F16.gguf", f.f16)
	f.hub.AddFile("org/repo", "mmproj-model-f16.gguf", ggufBytes(t, quant.F16, 4))
	f.hub.AddGitFile("org/repo", "README.md", []byte("# model\n"))
	cfg := hf.DefaultConfig()
	cfg.Endpoint = f.hub.URL()
	cfg.Token = token
	var err error
	f.client, err = hf.New(cfg)
	require.NoError(t, err)
	f.cat = newCatalog(t, t.TempDir(), nil)
	return f
}

func (f *fixture) fetch(t *testing.T, ref string, opts FetchOptions) (Entry, error) {
	t.Helper()
	r, err := ParseRef(ref)
	require.NoError(t, err)
	if opts.HF == nil {
		opts.HF = f.client
	}
	return f.cat.Fetch(context.Background(), r, opts)
}

func (f *fixture) cdnGets() []hubtest.Request {
	var out []hubtest.Request
	for _, r := range f.hub.Requests() {
		if r.Server == "cdn" {
			out = append(out, r)
		}
	}
	return out
}

// partials lists the partial files (a partial of a source that names its
// version keeps that beside it, in <name>.part.validator, which is not
// listed unless its partial is gone).
func partials(t *testing.T, c *Catalog) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(c.Dir(), PartialDir))
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		if part, ok := strings.CutSuffix(e.Name(), hf.ValidatorSuffix); ok {
			if _, err := os.Stat(filepath.Join(c.Dir(), PartialDir, part)); err == nil {
				continue
			}
		}
		names = append(names, e.Name())
	}
	return names
}

func TestFetchHF(t *testing.T) {
	for _, tc := range []struct {
		ref, id, file, quant string
		data                 func(*fixture) []byte
	}{
		{"hf:org/repo", "hf--org--repo--model-q4_k_m", "model-Q4_K_M.gguf", "Q4_K", func(f *fixture) []byte { return f.q4 }},
		{"hf:org/repo:q8_0", "hf--org--repo--model-q8_0", "model-Q8_0.gguf", "Q8_0", func(f *fixture) []byte { return f.q8 }},
		{"hf:org/repo/sub/model-F16.gguf", "hf--org--repo--sub--model-f16", "model-F16.gguf", "F16", func(f *fixture) []byte { return f.f16 }},
	} {
		t.Run(tc.ref, func(t *testing.T) {
			f := newFixture(t, "")
			var last Progress
			e, err := f.fetch(t, tc.ref, FetchOptions{Progress: func(p Progress) { last = p }})
			require.NoError(t, err)
			data := tc.data(f)
			require.Equal(t, tc.id, e.ID)
			require.Equal(t, tc.file, e.FileName)
			require.Equal(t, tc.quant, e.Quantization)
			require.Equal(t, sha(data), e.SHA256)
			require.Equal(t, SourceHF, e.Source)
			require.True(t, strings.HasPrefix(e.Ref, "hf:org/repo/"), e.Ref)
			got, err := os.ReadFile(e.Path)
			require.NoError(t, err)
			require.Equal(t, data, got)
			require.EqualValues(t, len(data), last.Done)
			require.Equal(t, tc.id, last.ID)
			require.Equal(t, SourceHF, last.Source)
			require.Empty(t, partials(t, f.cat), "no partial left")

			// A second fetch is answered from the catalog.
			n := len(f.cdnGets())
			again, err := f.fetch(t, tc.ref, FetchOptions{})
			require.NoError(t, err)
			require.Equal(t, e, again)
			require.Len(t, f.cdnGets(), n)
		})
	}
}

func TestFetchHFErrors(t *testing.T) {
	f := newFixture(t, "")
	for _, tc := range []struct {
		ref string
		err error
	}{
		{"hf:org/missing", hf.ErrNotFound},
		{"hf:org/repo/nope.gguf", hf.ErrNotFound},
		{"hf:org/repo:Q2_K", hf.ErrNoGGUF},
	} {
		_, err := f.fetch(t, tc.ref, FetchOptions{})
		require.ErrorIs(t, err, tc.err, tc.ref)
	}
	list, _ := f.cat.List()
	require.Empty(t, list)
	// No empty partial stays behind a failed download.
	parts, _ := os.ReadDir(filepath.Join(f.cat.Dir(), PartialDir))
	for _, p := range parts {
		info, err := p.Info()
		require.NoError(t, err)
		require.NotZero(t, info.Size(), "empty partial %s", p.Name())
	}
}

func TestFetchGated(t *testing.T) {
	f := newFixture(t, "")
	f.hub.AddFile("org/gated", "g-Q4_K_M.gguf", f.q4)
	f.hub.Gate("org/gated", "hf_good")

	_, err := f.fetch(t, "hf:org/gated", FetchOptions{})
	require.ErrorIs(t, err, hf.ErrGated)
	require.ErrorContains(t, err, "set HF_TOKEN")
	_, err = f.fetch(t, "hf:org/gated/g-Q4_K_M.gguf", FetchOptions{})
	require.ErrorIs(t, err, hf.ErrGated)
	list, _ := f.cat.List()
	require.Empty(t, list)

	cfg := hf.DefaultConfig()
	cfg.Endpoint = f.hub.URL()
	cfg.Token = "hf_good"
	authed, err := hf.New(cfg)
	require.NoError(t, err)
	e, err := f.fetch(t, "hf:org/gated", FetchOptions{HF: authed})
	require.NoError(t, err)
	require.Equal(t, sha(f.q4), e.SHA256)
	for _, r := range f.cdnGets() {
		require.Empty(t, r.Authorization, "the token must not reach the CDN")
	}
}

func TestFetchCorruptedAddsNothing(t *testing.T) {
	f := newFixture(t, "")
	f.hub.Corrupt(sha(f.q4))
	_, err := f.fetch(t, "hf:org/repo", FetchOptions{})
	require.ErrorIs(t, err, hf.ErrChecksum)
	list, _ := f.cat.List()
	require.Empty(t, list)
	require.Empty(t, partials(t, f.cat), "corrupt partial deleted")
}

func TestFetchResumesAfterCut(t *testing.T) {
	f := newFixture(t, "")
	f.hub.CutNext(sha(f.q8), 1000)
	e, err := f.fetch(t, "hf:org/repo:Q8_0", FetchOptions{Retries: 1})
	require.NoError(t, err)
	require.Equal(t, sha(f.q8), e.SHA256)
	gets := f.cdnGets()
	require.Len(t, gets, 2)
	require.Equal(t, "bytes=1000-", gets[1].Range)
}

func TestFetchResumesAcrossCalls(t *testing.T) {
	f := newFixture(t, "")
	f.hub.CutNext(sha(f.q8), 1500)
	_, err := f.fetch(t, "hf:org/repo:Q8_0", FetchOptions{Retries: -1})
	require.Error(t, err)
	require.Len(t, partials(t, f.cat), 1, "the partial stays")
	list, _ := f.cat.List()
	require.Empty(t, list)

	e, err := f.fetch(t, "hf:org/repo:Q8_0", FetchOptions{Retries: -1})
	require.NoError(t, err)
	require.Equal(t, sha(f.q8), e.SHA256)
	gets := f.cdnGets()
	require.Equal(t, "bytes=1500-", gets[len(gets)-1].Range)
	require.Empty(t, partials(t, f.cat))
}

func TestFetchCancelKeepsPartial(t *testing.T) {
	f := newFixture(t, "")
	big := make([]byte, 0, 4<<20)
	big = append(big, f.q8...)
	big = append(big, make([]byte, 4<<20-len(f.q8))...) // still a valid GGUF: trailing bytes are ignored
	f.hub.AddFile("org/big", "big-Q8_0.gguf", big)
	r, err := ParseRef("hf:org/big")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err = f.cat.Fetch(ctx, r, FetchOptions{HF: f.client, Progress: func(p Progress) {
		if p.Done > 0 {
			cancel()
		}
	}})
	require.ErrorIs(t, err, context.Canceled)
	require.Len(t, partials(t, f.cat), 1)
	list, _ := f.cat.List()
	require.Empty(t, list)

	e, err := f.cat.Fetch(context.Background(), r, FetchOptions{HF: f.client})
	require.NoError(t, err)
	require.Equal(t, sha(big), e.SHA256)
	gets := f.cdnGets()
	require.True(t, strings.HasPrefix(gets[len(gets)-1].Range, "bytes="), "resumed with a range")
}

func TestFetchNotGGUFDeleted(t *testing.T) {
	f := newFixture(t, "")
	f.hub.AddFile("org/junk", "junk.gguf", []byte("not a gguf at all"))
	_, err := f.fetch(t, "hf:org/junk", FetchOptions{})
	require.ErrorIs(t, err, ErrNotGGUF)
	require.Empty(t, partials(t, f.cat))
}

func TestFetchURL(t *testing.T) {
	f := newFixture(t, "secret")
	blob := f.hub.CDN.URL + "/blobs/" + sha(f.q8)

	e, err := f.fetch(t, blob, FetchOptions{})
	require.NoError(t, err)
	require.Equal(t, sha(f.q8), e.SHA256, "recorded as computed")
	require.Equal(t, SourceURL, e.Source)
	require.Equal(t, MakeID("url", "127.0.0.1", sha(f.q8)), e.ID)
	require.Equal(t, sha(f.q8)+".gguf", e.FileName)

	// With #sha256= the hash is checked: a wrong one is rejected.
	f2 := newFixture(t, "")
	wrong := strings.Repeat("0", 64)
	_, err = f2.fetch(t, f2.hub.CDN.URL+"/blobs/"+sha(f2.q4)+"#sha256="+wrong, FetchOptions{})
	require.ErrorIs(t, err, hf.ErrChecksum)
	list, _ := f2.cat.List()
	require.Empty(t, list)
	e, err = f2.fetch(t, f2.hub.CDN.URL+"/blobs/"+sha(f2.q4)+"#sha256="+sha(f2.q4), FetchOptions{})
	require.NoError(t, err)
	require.Equal(t, sha(f2.q4), e.SHA256)
	for _, r := range append(f.cdnGets(), f2.cdnGets()...) {
		require.Empty(t, r.Authorization)
	}
}

func TestFetchLocal(t *testing.T) {
	for _, link := range []bool{false, true} {
		t.Run(fmt.Sprint("link=", link), func(t *testing.T) {
			f := newFixture(t, "")
			src := filepath.Join(t.TempDir(), "My Model.gguf")
			require.NoError(t, os.WriteFile(src, f.f16, 0o644))
			e, err := f.fetch(t, src, FetchOptions{LinkLocal: link})
			require.NoError(t, err)
			require.Equal(t, "local--my-model", e.ID)
			require.Equal(t, "My Model.gguf", e.FileName)
			require.Equal(t, sha(f.f16), e.SHA256)
			require.Equal(t, src, e.Ref)
			got, err := os.ReadFile(e.Path)
			require.NoError(t, err)
			require.Equal(t, f.f16, got)
			_, err = os.Stat(src)
			require.NoError(t, err, "the original stays")
		})
	}
	f := newFixture(t, "")
	_, err := f.fetch(t, "org/repo", FetchOptions{})
	require.ErrorContains(t, err, "hf:org/repo")
	dir := t.TempDir()
	_, err = f.fetch(t, dir, FetchOptions{})
	require.ErrorContains(t, err, "not a regular file")
	require.ErrorIs(t, err, ErrBadRef, "the caller's mistake, not the node's")
	// A truncated model (its header fine) is refused before it is copied:
	// nothing is left in the catalog's partial downloads.
	cut := filepath.Join(t.TempDir(), "cut.gguf")
	require.NoError(t, os.WriteFile(cut, f.f16[:len(f.f16)*2/3], 0o644))
	_, err = f.fetch(t, cut, FetchOptions{})
	require.ErrorIs(t, err, ErrNotGGUF)
	require.Equal(t, 1, strings.Count(err.Error(), cut), "the file is named once: %v", err)
	parts, _ := os.ReadDir(filepath.Join(f.cat.Dir(), PartialDir))
	require.Empty(t, parts)
	list, _ := f.cat.List()
	require.Empty(t, list)
}

func TestFetchBuiltin(t *testing.T) {
	f := newFixture(t, "")
	e, err := f.fetch(t, "builtin:stories260k", FetchOptions{Peers: failingPeer{t}})
	require.NoError(t, err)
	require.Equal(t, "builtin--stories260k", e.ID)
	require.Equal(t, stories260KSHA, e.SHA256)
	require.EqualValues(t, 1185376, e.Size)
	require.Equal(t, "stories260K.gguf", e.FileName)
	require.Equal(t, "llama", e.Architecture)
	require.Equal(t, "F32", e.Quantization)
	require.EqualValues(t, 2048, e.ContextLength)
	require.Equal(t, SourceBuiltin, e.Source)
	require.Equal(t, "builtin:stories260k", e.Ref)
	fixture, err := os.ReadFile("../../testdata/model/stories260K.gguf")
	require.NoError(t, err)
	got, err := os.ReadFile(e.Path)
	require.NoError(t, err)
	require.Equal(t, fixture, got)
}

// failingPeer fails the test if asked: builtin and local refs never go to peers.
type failingPeer struct{ t *testing.T }

func (p failingPeer) OpenRange(context.Context, string, int64) (io.ReadCloser, int64, error) {
	p.t.Error("peer asked")
	return nil, 0, errors.New("no")
}

// catalogPeer serves files from another node's Catalog through its
// OpenRange, as the node's libp2p handler does, with fault injection.
type catalogPeer struct {
	c        *Catalog
	mu       sync.Mutex
	calls    []int64 // offsets asked
	cutAfter int64   // > 0: the first stream breaks after this many bytes, later opens fail
	corrupt  bool
}

func (p *catalogPeer) OpenRange(_ context.Context, sum string, off int64) (io.ReadCloser, int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, off)
	if p.cutAfter > 0 && len(p.calls) > 1 {
		return nil, 0, errors.New("peer went away")
	}
	f, size, err := p.c.OpenRange(context.Background(), sum, off)
	if err != nil {
		return nil, 0, err
	}
	var r io.Reader = f
	if p.corrupt {
		b, _ := io.ReadAll(f)
		b[len(b)/2] ^= 1
		r = strings.NewReader(string(b))
	}
	if p.cutAfter > 0 {
		r = io.MultiReader(io.LimitReader(r, p.cutAfter), errReader{})
	}
	return struct {
		io.Reader
		io.Closer
	}{r, f}, size, nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("stream reset") }

func TestFetchFromPeer(t *testing.T) {
	f := newFixture(t, "")
	// Node B already has the file (downloaded from the Hub).
	nodeB := newCatalog(t, t.TempDir(), nil)
	bEntry, err := nodeB.Fetch(context.Background(), Ref{Source: SourceHF, Repo: "org/repo", Quant: "Q8_0"}, FetchOptions{HF: f.client})
	require.NoError(t, err)
	cdnBefore := len(f.cdnGets())

	peer := &catalogPeer{c: nodeB}
	var sources []Source
	e, err := f.fetch(t, "hf:org/repo:Q8_0", FetchOptions{Peers: peer, Progress: func(p Progress) { sources = append(sources, p.Source) }})
	require.NoError(t, err)
	require.Equal(t, SourcePeer, e.Source)
	require.Equal(t, bEntry.ID, e.ID, "same id on every node")
	require.Equal(t, bEntry.SHA256, e.SHA256)
	require.Len(t, f.cdnGets(), cdnBefore, "nothing downloaded from the internet")
	require.Contains(t, sources, SourcePeer)
	require.Equal(t, []int64{0}, peer.calls)
}

func TestFetchPeerCorruptFallsBackToHub(t *testing.T) {
	f := newFixture(t, "")
	nodeB := newCatalog(t, t.TempDir(), nil)
	_, err := nodeB.Fetch(context.Background(), Ref{Source: SourceHF, Repo: "org/repo"}, FetchOptions{HF: f.client})
	require.NoError(t, err)
	e, err := f.fetch(t, "hf:org/repo", FetchOptions{Peers: &catalogPeer{c: nodeB, corrupt: true}})
	require.NoError(t, err)
	require.Equal(t, SourceHF, e.Source)
	require.Equal(t, sha(f.q4), e.SHA256)
}

func TestFetchPeerCutResumesFromHub(t *testing.T) {
	f := newFixture(t, "")
	nodeB := newCatalog(t, t.TempDir(), nil)
	_, err := nodeB.Fetch(context.Background(), Ref{Source: SourceHF, Repo: "org/repo"}, FetchOptions{HF: f.client})
	require.NoError(t, err)
	cdnBefore := len(f.cdnGets())
	peer := &catalogPeer{c: nodeB, cutAfter: 1234}
	e, err := f.fetch(t, "hf:org/repo", FetchOptions{Peers: peer, Retries: 1})
	require.NoError(t, err)
	require.Equal(t, sha(f.q4), e.SHA256)
	require.Equal(t, []int64{0, 1234}, peer.calls, "the peer is asked to resume first")
	gets := f.cdnGets()[cdnBefore:]
	require.Len(t, gets, 1)
	require.Equal(t, "bytes=1234-", gets[0].Range, "the Hub continues where the peer stopped")
}

func TestFetchSameContentUnderNewID(t *testing.T) {
	f := newFixture(t, "")
	_, err := f.fetch(t, "hf:org/repo:Q8_0", FetchOptions{})
	require.NoError(t, err)
	n := len(f.cdnGets())
	e, err := f.fetch(t, f.hub.CDN.URL+"/blobs/"+sha(f.q8)+"#sha256="+sha(f.q8), FetchOptions{})
	require.NoError(t, err)
	require.Equal(t, SourceURL, e.Source)
	require.Len(t, f.cdnGets(), n, "copied from the existing entry")
	list, _ := f.cat.List()
	require.Len(t, list, 2)
	a, err := os.Stat(list[0].Path)
	require.NoError(t, err)
	b, err := os.Stat(list[1].Path)
	require.NoError(t, err)
	require.True(t, os.SameFile(a, b), "a URL of unknown size with a known sha256 is linked, not copied")
}

func TestFetchConcurrentSameRef(t *testing.T) {
	f := newFixture(t, "")
	var wg sync.WaitGroup
	entries := make([]Entry, 3)
	for i := range entries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, _ := ParseRef("hf:org/repo")
			e, err := f.cat.Fetch(context.Background(), r, FetchOptions{HF: f.client})
			assert.NoError(t, err)
			entries[i] = e
		}()
	}
	wg.Wait()
	require.Equal(t, entries[0], entries[1])
	require.Equal(t, entries[0], entries[2])
	require.Len(t, f.cdnGets(), 1, "one download")
}

func TestFetchExistsConflict(t *testing.T) {
	f := newFixture(t, "")
	e, err := f.fetch(t, "hf:org/repo:Q8_0", FetchOptions{})
	require.NoError(t, err)
	// Upstream replaces the file under the same name.
	f.hub.AddFile("org/repo", "model-Q8_0.gguf", ggufBytes(t, quant.Q8_0, 99))
	_, err = f.fetch(t, "hf:org/repo:Q8_0", FetchOptions{})
	require.ErrorIs(t, err, ErrExists)
	got, _ := f.cat.Get(e.ID)
	require.Equal(t, e, got)
}

// TestFetchChecksHeadFirst: a file that is not a model is refused at its
// first bytes: a local secret is not copied and its bytes are not in the
// error; a URL serving a web page or an endless stream writes nothing.
func TestFetchChecksHeadFirst(t *testing.T) {
	f := newFixture(t, "")
	secret := filepath.Join(t.TempDir(), "shadow")
	require.NoError(t, os.WriteFile(secret, []byte("root:$6$very-secret-hash:19000:0:99999:7:::\n"), 0o600))
	_, err := f.fetch(t, secret, FetchOptions{})
	require.ErrorIs(t, err, ErrNotGGUF)
	require.NotContains(t, err.Error(), "root")
	require.NotContains(t, err.Error(), "secret-hash")
	require.Empty(t, partials(t, f.cat))
	list, _ := f.cat.List()
	require.Empty(t, list)

	// A web server that answers HTML, and one that streams forever.
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/page.gguf" {
			_, _ = io.WriteString(w, "<!doctype html><p>INTERNAL-ONLY: db_password=hunter2</p>")
			return
		}
		// Valid GGUF magic, then bytes without end and without a length.
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write([]byte("GGUF\x03\x00\x00\x00"))
		buf := make([]byte, 64<<10)
		for i := 0; i < 1<<14 && r.Context().Err() == nil; i++ {
			k, err := w.Write(buf)
			served.Add(int64(k))
			if err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	}))
	defer srv.Close()
	_, err = f.fetch(t, srv.URL+"/page.gguf", FetchOptions{})
	require.ErrorIs(t, err, ErrNotGGUF)
	require.NotContains(t, err.Error(), "hunter2")
	require.Empty(t, partials(t, f.cat))

	const max = 4 << 20
	_, err = f.fetch(t, srv.URL+"/endless.gguf", FetchOptions{MaxSize: max, Retries: -1})
	require.ErrorIs(t, err, hf.ErrTooLarge)
	require.Empty(t, partials(t, f.cat), "the cut download left its partial")
	require.Less(t, served.Load(), int64(64<<20), "the download was not stopped near its cap")
	list, _ = f.cat.List()
	require.Empty(t, list)
}

// Two URLs of one host and file name share a catalog id, but never a
// partial: the second does not resume the first's cut bytes, and the
// first, fetched again, is not taken for the second.
func TestFetchURLsSharingAnID(t *testing.T) {
	f := newFixture(t, "")
	files := map[string][]byte{"/a/model.gguf": f.q8, "/b/model.gguf": f.q4}
	var cut atomic.Bool
	cut.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(&cutWriter{ResponseWriter: w, cut: r.URL.Path == "/a/model.gguf" && cut.Swap(false), left: 1000}, r, "model.gguf", time.Time{}, bytes.NewReader(b))
	}))
	defer srv.Close()
	_, err := f.fetch(t, srv.URL+"/a/model.gguf", FetchOptions{Retries: -1})
	require.Error(t, err, "the first download is cut")
	require.Len(t, partials(t, f.cat), 1, "its partial stays")

	e, err := f.fetch(t, srv.URL+"/b/model.gguf", FetchOptions{Retries: -1})
	require.NoError(t, err)
	require.Equal(t, sha(f.q4), e.SHA256, "b's own bytes, not a's prefix")

	_, err = f.fetch(t, srv.URL+"/a/model.gguf", FetchOptions{Retries: -1})
	require.ErrorIs(t, err, ErrExists, "the id is b's now: a is not b")
}

// cutWriter writes left bytes of the body and then fails, as a connection
// that breaks mid-download.
type cutWriter struct {
	http.ResponseWriter
	cut  bool
	left int
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if !c.cut {
		return c.ResponseWriter.Write(p)
	}
	if c.left <= 0 {
		panic(http.ErrAbortHandler)
	}
	n := min(len(p), c.left)
	c.left -= n
	k, err := c.ResponseWriter.Write(p[:n])
	if c.left <= 0 {
		c.ResponseWriter.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	return k, err
}

// TestFetchCutInTheHeader: a connection cut within the first bytes (before
// the GGUF header is whole) is network trouble, not a file that is not a
// model: it is retried and resumed, not refused as ErrNotGGUF.
func TestFetchCutInTheHeader(t *testing.T) {
	for _, cut := range []int64{0, 1, 7} {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			f := newFixture(t, "")
			f.hub.CutNext(sha(f.q8), cut)
			e, err := f.fetch(t, "hf:org/repo:Q8_0", FetchOptions{Retries: 1})
			require.NoError(t, err)
			require.Equal(t, sha(f.q8), e.SHA256)
			require.Len(t, f.cdnGets(), 2)
		})
	}
}

// TestFetchFailedBeforeAByteLeavesNothing: a fetch that fails before a
// byte is written removes its empty partial and the validator beside it.
func TestFetchFailedBeforeAByteLeavesNothing(t *testing.T) {
	f := newFixture(t, "")
	f.hub.CutNext(sha(f.q8), 0)
	_, err := f.fetch(t, "hf:org/repo:Q8_0", FetchOptions{Retries: -1})
	require.Error(t, err)
	ents, err := os.ReadDir(filepath.Join(f.cat.Dir(), PartialDir))
	require.NoError(t, err)
	require.Empty(t, ents)
}

// splitShard is the first shard of a model gguf-split cut in three: a
// valid GGUF holding a part of the tensors, with split.count 3.
func splitShard(t *testing.T) []byte {
	t.Helper()
	w := gguf.NewWriter()
	require.NoError(t, w.AddKV("general.architecture", "llama"))
	require.NoError(t, w.AddKV("split.no", uint16(0)))
	require.NoError(t, w.AddKV("split.count", uint16(3)))
	require.NoError(t, w.AddTensor("token_embd.weight", quant.F32, []uint64{256, 4}, make([]byte, 256*4*4)))
	var buf bytes.Buffer
	_, err := w.WriteTo(&buf)
	require.NoError(t, err)
	return buf.Bytes()
}

// TestFetchRefusesSplitShards: one shard of a split model is not a model
// rbee can load. Named by its shard file name, with the other parts
// missing from the repo, it is refused before a byte is downloaded, and
// the missing part is named; under any other name (a URL) its split.count
// refuses it once it is here; the catalog holds nothing.
func TestFetchRefusesSplitShards(t *testing.T) {
	f := newFixture(t, "")
	shard := splitShard(t)
	f.hub.AddFile("org/split", "big-Q4_K_M-00001-of-00003.gguf", shard)
	before := len(f.cdnGets())
	_, err := f.fetch(t, "hf:org/split/big-Q4_K_M-00001-of-00003.gguf", FetchOptions{})
	require.ErrorIs(t, err, hf.ErrNotFound)
	require.Contains(t, err.Error(), "the repo has no big-Q4_K_M-00002-of-00003.gguf")
	require.Len(t, f.cdnGets(), before, "nothing downloaded")

	_, err = f.fetch(t, f.hub.CDN.URL+"/blobs/"+sha(shard), FetchOptions{})
	require.ErrorIs(t, err, ErrNotGGUF)
	require.Contains(t, err.Error(), "split.count")
	list, _ := f.cat.List()
	require.Empty(t, list)
	require.Empty(t, partials(t, f.cat))
}

// TestFetchSweepsPartialsAbandonedWhileRunning: a node runs for months, so
// a download abandoned after its catalog opened must go too: every fetch
// removes the partials not written for PartialMaxAge, but for its own
// (which it resumes) and those of other fetches in flight.
func TestFetchSweepsPartialsAbandonedWhileRunning(t *testing.T) {
	for _, tc := range []struct {
		name, next string
		kept       bool
	}{
		{"another model's fetch removes it", "hf:org/repo", false},
		{"its own fetch resumes it", "hf:org/big", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, "")
			big := append(append([]byte(nil), f.q8...), make([]byte, 4<<20)...)
			f.hub.AddFile("org/big", "big-Q8_0.gguf", big)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r, err := ParseRef("hf:org/big")
			require.NoError(t, err)
			_, err = f.cat.Fetch(ctx, r, FetchOptions{HF: f.client, Progress: func(p Progress) {
				if p.Done > 0 {
					cancel()
				}
			}})
			require.ErrorIs(t, err, context.Canceled)
			left := partials(t, f.cat)
			require.Len(t, left, 1)
			ents, err := os.ReadDir(filepath.Join(f.cat.Dir(), PartialDir))
			require.NoError(t, err)
			old := f.cat.now().Add(-DefaultPartialMaxAge - time.Hour)
			for _, e := range ents {
				require.NoError(t, os.Chtimes(filepath.Join(f.cat.Dir(), PartialDir, e.Name()), old, old))
			}

			_, err = f.fetch(t, tc.next, FetchOptions{})
			require.NoError(t, err)
			if tc.kept {
				gets := f.cdnGets()
				require.True(t, strings.HasPrefix(gets[len(gets)-1].Range, "bytes="), "its own old partial was resumed")
				return
			}
			require.Empty(t, partials(t, f.cat), "a partial abandoned for over PartialMaxAge stays while the node runs")
		})
	}
}
