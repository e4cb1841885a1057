package catalog

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// holders serves a file from several nodes' catalogs, the first holder not
// reported first, as the node's blob.ModelSource does: a holder reported
// through BadCopy is not asked again. Holder 0's stream sends stallAfter
// bytes and then nothing, until its read deadline fails it (the node's
// blob stream has one).
type holders struct {
	cats       []*Catalog
	stallAfter int64
	mu         sync.Mutex
	calls      []string // "holder@offset"
	served     int
	bad        map[int]bool
}

func (h *holders) OpenRange(_ context.Context, sum string, off int64) (io.ReadCloser, int64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, c := range h.cats {
		if h.bad[i] {
			continue
		}
		f, size, err := c.OpenRange(context.Background(), sum, off)
		if err != nil {
			return nil, 0, err
		}
		h.calls = append(h.calls, fmt.Sprintf("%d@%d", i, off))
		h.served = i
		var r io.Reader = f
		if i == 0 {
			r = io.MultiReader(io.LimitReader(f, h.stallAfter), deadlineReader{})
		}
		return struct {
			io.Reader
			io.Closer
		}{r, f}, size, nil
	}
	return nil, 0, fmt.Errorf("no peer holds %s", sum)
}

func (h *holders) BadCopy(string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.bad[h.served] = true
}

// deadlineReader is a stream whose read deadline passed.
type deadlineReader struct{}

func (deadlineReader) Read([]byte) (int, error) { return 0, os.ErrDeadlineExceeded }

// A holder that stalls is not asked again by the retry: the transfer's
// next try resumes from another holder, and the Hub is not needed.
func TestFetchPeerStallGoesToAnotherHolder(t *testing.T) {
	f := newFixture(t, "")
	var cats []*Catalog
	for range 2 {
		c := newCatalog(t, t.TempDir(), nil)
		_, err := c.Fetch(context.Background(), Ref{Source: SourceHF, Repo: "org/repo"}, FetchOptions{HF: f.client})
		require.NoError(t, err)
		cats = append(cats, c)
	}
	cdnBefore := len(f.cdnGets())
	peers := &holders{cats: cats, stallAfter: 1000, bad: map[int]bool{}}
	e, err := f.fetch(t, "hf:org/repo", FetchOptions{Peers: peers})
	require.NoError(t, err)
	require.Equal(t, SourcePeer, e.Source)
	require.Equal(t, sha(f.q4), e.SHA256)
	require.Equal(t, []string{"0@0", "1@1000"}, peers.calls)
	require.Len(t, f.cdnGets(), cdnBefore, "nothing from the Hub")
}
