package hf_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rbee-project/rbee/model/hf"
	"github.com/rbee-project/rbee/model/hf/hubtest"
	"github.com/rbee-project/rbee/model/quant"
	"github.com/stretchr/testify/require"
)

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func newHub(t *testing.T) *hubtest.Hub {
	h := hubtest.New()
	t.Cleanup(h.Close)
	return h
}

func newClient(t *testing.T, endpoint, token string) *hf.Client {
	return newClientWith(t, endpoint, func(cfg *hf.Config) { cfg.Token = token })
}

// newClientWith is a client for endpoint with the changes edit makes to
// the default config.
func newClientWith(t *testing.T, endpoint string, edit func(*hf.Config)) *hf.Client {
	cfg := hf.DefaultConfig()
	cfg.Endpoint = endpoint
	edit(&cfg)
	c, err := hf.New(cfg)
	require.NoError(t, err)
	return c
}

func tinyGGUF(t *testing.T, typ quant.Type, seed uint64) []byte {
	b, err := hubtest.GGUF("llama", 512, typ, seed)
	require.NoError(t, err)
	return b
}

// bigBlob is larger than several copy buffers, so a transfer takes many reads.
func bigBlob(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

func cdnRequests(h *hubtest.Hub) []hubtest.Request {
	var out []hubtest.Request
	for _, r := range h.Requests() {
		if r.Server == "cdn" {
			out = append(out, r)
		}
	}
	return out
}

func TestValidateRepoID(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"ggml-org/models", true},
		{"TheBloke/Llama-2-7B-GGUF", true},
		{"gpt2", true},
		{"a_b.c/d-e_f.g", true},
		{"", false},
		{"a/b/c", false},
		{"../etc", false},
		{"org/..", false},
		{"org/a--b", false},
		{"org/-a", false},
		{"org/a.", false},
		{"org/a b", false},
		{"/abs", false},
		{"org/" + strings.Repeat("x", 97), false},
	} {
		err := hf.ValidateRepoID(tc.id)
		if tc.ok {
			require.NoError(t, err, tc.id)
		} else {
			require.ErrorIs(t, err, hf.ErrBadRepo, tc.id)
		}
	}
}

func TestHasQuantTag(t *testing.T) {
	for _, tc := range []struct {
		path, tag string
		want      bool
	}{
		{"model.Q4_K_M.gguf", "Q4_K_M", true},
		{"model-q4_k_m.gguf", "Q4_K_M", true},
		{"model_Q4_K_M.gguf", "q4_k_m", true},
		{"sub/Model-Q8_0.gguf", "Q8_0", true},
		{"model.Q4_K_M.gguf", "Q4_K", false},
		{"model.Q4_K_S.gguf", "Q4_K_M", false},
		{"model.IQ4_XS.gguf", "Q4_XS", false},
		{"model-f16.gguf", "F16", true},
		{"model-bf16.gguf", "F16", false},
		{"Q8_0/model.gguf", "Q8_0", false}, // only the base name counts
		{"model.gguf", "", false},
	} {
		require.Equal(t, tc.want, hf.HasQuantTag(tc.path, tc.tag), "%s %s", tc.path, tc.tag)
	}
}

// TestPickModel: a complete gguf-split set is one candidate (named by its
// first part, chosen by quantization like a single file, all its parts in
// order); an incomplete set, a later part, and malformed part names are
// never chosen.
func TestPickModel(t *testing.T) {
	files := []hf.File{
		{Path: "README.md"},
		{Path: "model-Q8_0.gguf"},
		{Path: "model-Q4_K_M.gguf"},
		{Path: "model-Q4_K_S.gguf"},
		{Path: "model-f16.gguf"},
		{Path: "mmproj-model-f16.gguf"},
		{Path: "big/model-Q4_K_M-00001-of-00002.gguf"},
		{Path: "big/model-Q4_K_M-00002-of-00002.gguf"},
	}
	splits := []hf.File{
		{Path: "Q6_K/m-Q6_K-00002-of-00003.gguf"},
		{Path: "Q6_K/m-Q6_K-00001-of-00003.gguf"},
		{Path: "Q6_K/m-Q6_K-00003-of-00003.gguf"},
		{Path: "Q8_0/m-Q8_0-00001-of-00002.gguf"}, // its second part is missing
		{Path: "m-Q5_0-00001-of-00001.gguf"},
		{Path: "m-Q4_0-00000-of-00002.gguf"}, // not llama.cpp's numbering
		{Path: "m-Q4_0-00001-of-00002.GGUF"},
	}
	for _, tc := range []struct {
		name        string
		files       []hf.File
		file, quant string
		want        string // paths, comma-separated
		err         error
		msg         string
	}{
		{"preference", files, "", "", "model-Q4_K_M.gguf", nil, ""},
		{"preference without Q4_K_M", files[3:6], "", "", "model-Q4_K_S.gguf", nil, ""},
		{"preference takes a split set like a file", files[3:], "", "", "big/model-Q4_K_M-00001-of-00002.gguf,big/model-Q4_K_M-00002-of-00002.gguf", nil, ""},
		{"quant tag", files, "", "q8_0", "model-Q8_0.gguf", nil, ""},
		{"quant tag F16 skips mmproj", files, "", "F16", "model-f16.gguf", nil, ""},
		{"missing quant", files, "", "Q2_K", "", hf.ErrNoGGUF, "big/model-Q4_K_M-00001-of-00002.gguf (2 parts)"},
		{"exact", files, "model-f16.gguf", "", "model-f16.gguf", nil, ""},
		{"exact missing", files, "nope.gguf", "", "", hf.ErrNotFound, ""},
		{"exact not gguf", files, "README.md", "", "", hf.ErrNoGGUF, ""},
		{"exact split", files, "big/model-Q4_K_M-00001-of-00002.gguf", "", "big/model-Q4_K_M-00001-of-00002.gguf,big/model-Q4_K_M-00002-of-00002.gguf", nil, ""},
		{"exact later part", files, "big/model-Q4_K_M-00002-of-00002.gguf", "", "", hf.ErrNoGGUF, "name its first part, big/model-Q4_K_M-00001-of-00002.gguf"},
		{"only splits", files[6:], "", "", "big/model-Q4_K_M-00001-of-00002.gguf,big/model-Q4_K_M-00002-of-00002.gguf", nil, ""},
		{"split by quant, parts in order", splits, "", "Q6_K", "Q6_K/m-Q6_K-00001-of-00003.gguf,Q6_K/m-Q6_K-00002-of-00003.gguf,Q6_K/m-Q6_K-00003-of-00003.gguf", nil, ""},
		{"split by preference", splits, "", "", "Q6_K/m-Q6_K-00001-of-00003.gguf,Q6_K/m-Q6_K-00002-of-00003.gguf,Q6_K/m-Q6_K-00003-of-00003.gguf", nil, ""},
		{"a set of one part", splits[3:], "", "", "m-Q5_0-00001-of-00001.gguf", nil, ""},
		{"incomplete split", splits, "", "Q8_0", "", hf.ErrNoGGUF, ""},
		{"exact incomplete split", splits, "Q8_0/m-Q8_0-00001-of-00002.gguf", "", "", hf.ErrNotFound, "the repo has no m-Q8_0-00002-of-00002.gguf"},
		{"malformed parts", splits, "", "Q4_0", "", hf.ErrNoGGUF, ""},
		{"single untagged", []hf.File{{Path: "stories260K.gguf"}, {Path: "x.bin"}}, "", "", "stories260K.gguf", nil, ""},
		{"several untagged", []hf.File{{Path: "a.gguf"}, {Path: "b.gguf"}}, "", "", "", hf.ErrNoGGUF, ""},
		{"empty", nil, "", "", "", hf.ErrNoGGUF, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, err := hf.PickModel(tc.files, tc.file, tc.quant)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				require.ErrorContains(t, err, tc.msg)
				return
			}
			require.NoError(t, err)
			var got []string
			for _, f := range fs {
				got = append(got, f.Path)
			}
			require.Equal(t, tc.want, strings.Join(got, ","))
		})
	}
}

func TestListFilesPaginatedWithLFS(t *testing.T) {
	h := newHub(t)
	q4 := tinyGGUF(t, quant.Q4_K, 1)
	q8 := tinyGGUF(t, quant.Q8_0, 2)
	h.AddFile("org/repo", "model-Q4_K_M.gguf", q4)
	h.AddFile("org/repo", "sub/model-Q8_0.gguf", q8)
	h.AddGitFile("org/repo", "README.md", []byte("# hi\n"))
	h.AddGitFile("org/repo", "config.json", []byte("{}"))
	h.AddGitFile("org/repo", "sub/deeper/notes.txt", []byte("x"))
	c := newClient(t, h.URL(), "")

	files, err := c.ListFiles(context.Background(), "org/repo", "main")
	require.NoError(t, err)
	byPath := map[string]hf.File{}
	for _, f := range files {
		byPath[f.Path] = f
	}
	require.Len(t, byPath, 5, "directories are skipped, every file listed: %v", files)
	require.Equal(t, sum(q4), byPath["model-Q4_K_M.gguf"].SHA256)
	require.EqualValues(t, len(q4), byPath["model-Q4_K_M.gguf"].Size, "LFS size, not pointer size")
	require.Equal(t, sum(q8), byPath["sub/model-Q8_0.gguf"].SHA256)
	require.Empty(t, byPath["README.md"].SHA256, "git files have no sha256")
	require.EqualValues(t, 5, byPath["README.md"].Size)

	pages := 0
	for _, r := range h.Requests() {
		if strings.Contains(r.Path, "/tree/") {
			pages++
		}
	}
	require.Equal(t, 4, pages, "7 entries (5 files + 2 dirs) in pages of 2")
}

func TestFileMetadata(t *testing.T) {
	h := newHub(t)
	data := tinyGGUF(t, quant.Q4_K, 3)
	h.AddFile("org/repo", "m-Q4_K_M.gguf", data)
	h.AddGitFile("org/repo", "README.md", []byte("hello"))
	c := newClient(t, h.URL(), "")

	m, err := c.FileMetadata(context.Background(), "org/repo", "main", "m-Q4_K_M.gguf")
	require.NoError(t, err)
	require.Equal(t, sum(data), m.SHA256)
	require.Equal(t, sum(data), m.ETag)
	require.EqualValues(t, len(data), m.Size)
	require.Equal(t, hubtest.Commit, m.Commit)
	require.True(t, strings.HasPrefix(m.Location, h.CDN.URL+"/blobs/"), m.Location)

	m, err = c.FileMetadata(context.Background(), "org/repo", "main", "README.md")
	require.NoError(t, err)
	require.Empty(t, m.SHA256, "git blob etag is not a sha256")
	require.Len(t, m.ETag, 40)
	require.EqualValues(t, 5, m.Size)
	require.Equal(t, c.ResolveURL("org/repo", "main", "README.md"), m.Location)
}

func TestErrors(t *testing.T) {
	h := newHub(t)
	h.AddFile("org/repo", "a.gguf", []byte("GGUF"))
	h.AddFile("org/gated", "a.gguf", []byte("GGUF"))
	h.Gate("org/gated", "hf_secret")
	ctx := context.Background()
	anon := newClient(t, h.URL(), "")
	wrong := newClient(t, h.URL(), "hf_wrong")
	right := newClient(t, h.URL(), "hf_secret")

	for _, tc := range []struct {
		name      string
		c         *hf.Client
		repo, rev string
		path      string
		err       error
	}{
		{"missing repo anonymous", anon, "org/nope", "main", "a.gguf", hf.ErrNotFound},
		{"missing repo with token", right, "org/nope", "main", "a.gguf", hf.ErrNotFound},
		{"missing file", anon, "org/repo", "main", "b.gguf", hf.ErrNotFound},
		{"missing revision", anon, "org/repo", "v9", "a.gguf", hf.ErrNotFound},
		{"gated anonymous", anon, "org/gated", "main", "a.gguf", hf.ErrGated},
		{"gated wrong token", wrong, "org/gated", "main", "a.gguf", hf.ErrGated},
		{"bad repo id", anon, "../x", "main", "a.gguf", hf.ErrBadRepo},
		{"bad path", anon, "org/repo", "main", "../a.gguf", hf.ErrBadRepo},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.c.FileMetadata(ctx, tc.repo, tc.rev, tc.path)
			require.ErrorIs(t, err, tc.err)
			if tc.path != "b.gguf" && !errors.Is(tc.err, hf.ErrBadRepo) {
				_, err = tc.c.ListFiles(ctx, tc.repo, tc.rev)
				require.ErrorIs(t, err, tc.err)
			}
			_, err = tc.c.DownloadFile(ctx, tc.repo, tc.rev, hf.File{Path: tc.path}, hf.Spec{Partial: filepath.Join(t.TempDir(), "x.part")})
			require.ErrorIs(t, err, tc.err)
		})
	}
	_, err := anon.ListFiles(ctx, "org/gated", "main")
	require.ErrorContains(t, err, "accept its licence on the website and set HF_TOKEN")

	files, err := right.ListFiles(ctx, "org/gated", "main")
	require.NoError(t, err)
	require.Len(t, files, 1)
}

func TestDownloadGatedTokenNotSentToCDN(t *testing.T) {
	h := newHub(t)
	data := tinyGGUF(t, quant.Q8_0, 4)
	h.AddFile("org/gated", "m-Q8_0.gguf", data)
	h.Gate("org/gated", "hf_secret")
	c := newClient(t, h.URL(), "hf_secret")
	files, err := c.ListFiles(context.Background(), "org/gated", "main")
	require.NoError(t, err)
	picked, err := hf.PickModel(files, "", "Q8_0")
	require.NoError(t, err)
	f := picked[0]

	part := filepath.Join(t.TempDir(), ".partial", "m.part")
	res, err := c.DownloadFile(context.Background(), "org/gated", "main", f, hf.Spec{Partial: part})
	require.NoError(t, err)
	require.Equal(t, sum(data), res.SHA256)
	got, err := os.ReadFile(part)
	require.NoError(t, err)
	require.Equal(t, data, got)

	var hubSaw, cdnSaw int
	for _, r := range h.Requests() {
		switch r.Server {
		case "hub":
			require.Equal(t, "Bearer hf_secret", r.Authorization, r.Path)
			hubSaw++
		case "cdn":
			require.Empty(t, r.Authorization, "token leaked to the CDN")
			cdnSaw++
		}
	}
	require.Positive(t, hubSaw)
	require.Equal(t, 1, cdnSaw)
}

func TestResumeWithinCallAfterCut(t *testing.T) {
	h := newHub(t)
	data := bigBlob(1, 3<<20)
	sha := h.AddFile("org/repo", "m.gguf", data)
	h.CutNext(sha, 1<<20)
	c := newClient(t, h.URL(), "")
	part := filepath.Join(t.TempDir(), "m.part")
	res, err := c.DownloadFile(context.Background(), "org/repo", "main", hf.File{Path: "m.gguf", Size: int64(len(data)), SHA256: sha},
		hf.Spec{Partial: part, Retries: 1, RetryBackoff: time.Millisecond})
	require.NoError(t, err)
	require.Equal(t, sha, res.SHA256)
	reqs := cdnRequests(h)
	require.Len(t, reqs, 2)
	require.Empty(t, reqs[0].Range)
	require.Equal(t, "bytes=1048576-", reqs[1].Range)
}

func TestResumeAcrossCalls(t *testing.T) {
	h := newHub(t)
	data := bigBlob(2, 2<<20)
	sha := h.AddFile("org/repo", "m.gguf", data)
	h.CutNext(sha, 700_000)
	c := newClient(t, h.URL(), "")
	part := filepath.Join(t.TempDir(), "m.part")
	f := hf.File{Path: "m.gguf", Size: int64(len(data)), SHA256: sha}

	_, err := c.DownloadFile(context.Background(), "org/repo", "main", f, hf.Spec{Partial: part})
	require.Error(t, err)
	st, err := os.Stat(part)
	require.NoError(t, err)
	require.EqualValues(t, 700_000, st.Size(), "the partial keeps what arrived")

	res, err := c.DownloadFile(context.Background(), "org/repo", "main", f, hf.Spec{Partial: part})
	require.NoError(t, err)
	require.EqualValues(t, 700_000, res.Resumed)
	require.Equal(t, sha, res.SHA256)
	reqs := cdnRequests(h)
	require.Equal(t, "bytes=700000-", reqs[len(reqs)-1].Range)
}

func TestServerIgnoresRangeRestartsCleanly(t *testing.T) {
	h := newHub(t)
	data := bigBlob(3, 1<<20)
	sha := h.AddFile("org/repo", "m.gguf", data)
	c := newClient(t, h.URL(), "")
	part := filepath.Join(t.TempDir(), "m.part")
	require.NoError(t, os.WriteFile(part, data[:5000], 0o644))
	h.IgnoreRange(true)
	res, err := c.DownloadFile(context.Background(), "org/repo", "main", hf.File{Path: "m.gguf", Size: int64(len(data)), SHA256: sha}, hf.Spec{Partial: part})
	require.NoError(t, err)
	require.Equal(t, sha, res.SHA256)
	reqs := cdnRequests(h)
	require.Equal(t, "bytes=5000-", reqs[0].Range, "a resume was attempted")
}

func TestCorruptDeletesPartial(t *testing.T) {
	h := newHub(t)
	data := tinyGGUF(t, quant.Q4_K, 5)
	sha := h.AddFile("org/repo", "m.gguf", data)
	h.Corrupt(sha)
	c := newClient(t, h.URL(), "")
	part := filepath.Join(t.TempDir(), "m.part")
	_, err := c.DownloadFile(context.Background(), "org/repo", "main", hf.File{Path: "m.gguf", Size: int64(len(data)), SHA256: sha}, hf.Spec{Partial: part})
	require.ErrorIs(t, err, hf.ErrChecksum)
	_, err = os.Stat(part)
	require.True(t, os.IsNotExist(err), "partial must be deleted: %v", err)
}

func TestCancelKeepsPartialThenResumes(t *testing.T) {
	h := newHub(t)
	data := bigBlob(4, 4<<20)
	sha := h.AddFile("org/repo", "m.gguf", data)
	c := newClient(t, h.URL(), "")
	part := filepath.Join(t.TempDir(), "m.part")
	f := hf.File{Path: "m.gguf", Size: int64(len(data)), SHA256: sha}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := c.DownloadFile(ctx, "org/repo", "main", f, hf.Spec{Partial: part, Retries: 3,
		Progress: func(p hf.Progress) {
			if p.Done > 0 {
				cancel()
			}
		}})
	require.ErrorIs(t, err, context.Canceled)
	st, err := os.Stat(part)
	require.NoError(t, err)
	require.Positive(t, st.Size())
	require.Less(t, st.Size(), int64(len(data)))

	res, err := c.DownloadFile(context.Background(), "org/repo", "main", f, hf.Spec{Partial: part})
	require.NoError(t, err)
	require.Equal(t, st.Size(), res.Resumed)
	require.Equal(t, sha, res.SHA256)
}

func TestProgressThrottledAndFinal(t *testing.T) {
	h := newHub(t)
	data := bigBlob(5, 2<<20)
	sha := h.AddFile("org/repo", "m.gguf", data)
	c := newClient(t, h.URL(), "")
	var got []hf.Progress
	_, err := c.DownloadFile(context.Background(), "org/repo", "main", hf.File{Path: "m.gguf", Size: int64(len(data)), SHA256: sha},
		hf.Spec{Partial: filepath.Join(t.TempDir(), "m.part"), ProgressInterval: time.Hour, Progress: func(p hf.Progress) { got = append(got, p) }})
	require.NoError(t, err)
	require.Len(t, got, 2, "one report at the start, then only the final one within the interval")
	last := got[len(got)-1]
	require.EqualValues(t, len(data), last.Done)
	require.EqualValues(t, len(data), last.Total)
	require.Zero(t, last.ETA)
	require.Less(t, got[0].Done, last.Done)
}

func TestNoSpace(t *testing.T) {
	opened := false
	open := func(context.Context, int64) (io.ReadCloser, int64, int64, error) {
		opened = true
		return nil, 0, 0, errors.New("must not be called")
	}
	_, err := hf.Transfer(context.Background(), open, hf.Spec{Partial: filepath.Join(t.TempDir(), "x.part"), Size: 1 << 62})
	require.ErrorIs(t, err, hf.ErrNoSpace)
	require.False(t, opened)
}

func TestURLDownloadUnknownSizeAndComplete416(t *testing.T) {
	h := newHub(t)
	data := bigBlob(6, 300_000)
	sha := h.AddFile("org/repo", "m.gguf", data)
	c := newClient(t, h.URL(), "hf_secret")
	part := filepath.Join(t.TempDir(), "m.part")
	cdnURL := h.CDN.URL + "/blobs/" + sha
	res, err := hf.Transfer(context.Background(), c.URLOpener(cdnURL), hf.Spec{Partial: part})
	require.NoError(t, err)
	require.Equal(t, sha, res.SHA256, "computed when not given")
	// Again on the complete partial: the server answers 416 bytes */N.
	res, err = hf.Transfer(context.Background(), c.URLOpener(cdnURL), hf.Spec{Partial: part, SHA256: sha})
	require.NoError(t, err)
	require.EqualValues(t, len(data), res.Resumed)
	for _, r := range cdnRequests(h) {
		require.Empty(t, r.Authorization, "token is for the Hub host only")
	}
}

func TestTransferRejectsOverlongSource(t *testing.T) {
	data := []byte("0123456789")
	open := func(context.Context, int64) (io.ReadCloser, int64, int64, error) {
		return io.NopCloser(bytes.NewReader(data)), 0, 0, nil
	}
	_, err := hf.Transfer(context.Background(), open, hf.Spec{Partial: filepath.Join(t.TempDir(), "x.part"), Size: 4})
	require.ErrorIs(t, err, hf.ErrChecksum)
	_, err = hf.Transfer(context.Background(), open, hf.Spec{Partial: filepath.Join(t.TempDir(), "y.part"), SHA256: "xyz"})
	require.ErrorIs(t, err, hf.ErrChecksum)
}

func TestStalledConnectionIsRetried(t *testing.T) {
	h := newHub(t)
	data := bigBlob(7, 1<<20)
	sha := h.AddFile("org/repo", "m.gguf", data)
	h.StallNext(sha, 4096)
	c := newClient(t, h.URL(), "")
	res, err := c.DownloadFile(context.Background(), "org/repo", "main", hf.File{Path: "m.gguf", Size: int64(len(data)), SHA256: sha},
		hf.Spec{Partial: filepath.Join(t.TempDir(), "m.part"), Retries: 1, RetryBackoff: time.Millisecond, IdleTimeout: 200 * time.Millisecond})
	require.NoError(t, err)
	require.Equal(t, sha, res.SHA256)
	reqs := cdnRequests(h)
	require.Len(t, reqs, 2)
	require.Equal(t, "bytes=4096-", reqs[1].Range)

	// Without retries the stall is reported as such, and the partial kept.
	h.StallNext(sha, 4096)
	part := filepath.Join(t.TempDir(), "n.part")
	_, err = c.DownloadFile(context.Background(), "org/repo", "main", hf.File{Path: "m.gguf", Size: int64(len(data)), SHA256: sha},
		hf.Spec{Partial: part, IdleTimeout: 200 * time.Millisecond})
	require.ErrorContains(t, err, "idle timeout")
	st, err := os.Stat(part)
	require.NoError(t, err)
	require.EqualValues(t, 4096, st.Size())
}
