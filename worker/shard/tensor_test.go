package shard

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/engine"
	"github.com/rbee-project/rbee/model/synth"
)

// startMember runs KV heads [lo, hi) of path as a tensor member Server on
// loopback TCP (on addr, or a free port).
func startMember(t testing.TB, path string, lo, hi int, addr string, gather bool, opts engine.Options) *stageServer {
	return startMemberStar(t, path, lo, hi, addr, gather, opts, false)
}

// startMemberStar is startMember with a Server that refuses the pairwise
// hello when starOnly, as one of the version before it.
func startMemberStar(t testing.TB, path string, lo, hi int, addr string, gather bool, opts engine.Options, starOnly bool) *stageServer {
	t.Helper()
	link := NewMemberLink()
	m, err := engine.LoadShard(path, engine.ShardSpec{Mode: engine.Tensor, KVLo: lo, KVHi: hi, Peers: link, Gather: gather}, opts)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	srv, err := NewServer(ServerConfig{Model: m, Link: link, starOnly: starOnly})
	require.NoError(t, err)
	return serveOn(t, srv, addr)
}

// startTensorGroup starts the members of path split at bounds (KV heads)
// and loads the head; gather is their ShardSpec.Gather.
func startTensorGroup(t testing.TB, path string, bounds []int, gather bool, opts engine.Options) (*engine.Model, *TensorGroup, []*stageServer) {
	return startTensorGroupVia(t, path, bounds, gather, opts, nil)
}

// startTensorGroupVia is startTensorGroup with the head's connections to
// its members made through wrap (nil: plain loopback TCP).
func startTensorGroupVia(t testing.TB, path string, bounds []int, gather bool, opts engine.Options, wrap func(Dialer) Dialer) (*engine.Model, *TensorGroup, []*stageServer) {
	t.Helper()
	var members []*stageServer
	var dials []Dialer
	for i := 1; i+1 < len(bounds); i++ {
		st := startMember(t, path, bounds[i], bounds[i+1], "", gather, opts)
		members = append(members, st)
		d := TCPDialer(st.addr)
		if wrap != nil {
			d = wrap(d)
		}
		dials = append(dials, d)
	}
	g, err := NewTensorGroup(TensorGroupConfig{Members: dials, KVHi: bounds[1], Timeout: 10 * time.Second})
	require.NoError(t, err)
	require.NoError(t, g.Start(context.Background()))
	t.Cleanup(func() { g.Close() })
	m, err := engine.LoadShard(path, engine.ShardSpec{Mode: engine.Tensor, KVLo: 0, KVHi: bounds[1], Peers: g, Gather: gather}, opts)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m, g, members
}

// generateLikeWhole generates n tokens after each prompt, in turn on one
// Session of the head m, and compares them with want (wholeRun's): ids and
// text equal, log-probabilities bit for bit when exact (ShardSpec.Gather)
// and within the rounding of sums in another order when not.
func generateLikeWhole(t *testing.T, m *engine.Model, prompts [][]int32, want []genOut, n int, exact bool) {
	t.Helper()
	s := m.NewSession()
	for i, pr := range prompts {
		got, err := generate(context.Background(), s, pr, n)
		require.NoError(t, err)
		if exact {
			require.Equal(t, want[i], got)
			continue
		}
		require.Equal(t, want[i].ids, got.ids)
		require.Equal(t, want[i].text, got.text)
		require.InDeltaSlice(t, want[i].logprobs, got.logprobs, 5e-2)
	}
}

// TestTensorGroupOverTCP: fixture models split by KV heads into 2 and 3
// shards (even and uneven) whose members are Servers on loopback TCP
// generate what the whole model generates: the same ids and text, and
// log-probabilities bit for bit with ShardSpec.Gather, within the float
// rounding of summing in another order with the all-reduces.
func TestTensorGroupOverTCP(t *testing.T) {
	opts := engine.Options{Threads: 1, ContextSize: 128}
	cases := []struct {
		path   string
		bounds []int
	}{
		{storiesPath, []int{0, 2, 4}},
		{storiesPath, []int{0, 1, 2, 4}},
		{q4kPath, []int{0, 3, 4}},
		{qwenPath, []int{0, 1, 2}},
	}
	for _, c := range cases {
		for _, gather := range []bool{true, false} {
			t.Run(fmt.Sprint(c.path[len(c.path)-20:], c.bounds, " gather=", gather), func(t *testing.T) {
				prompts, want := wholeRun(t, c.path, opts, []string{"Once upon a time", "The little dog"}, 16)
				m, g, _ := startTensorGroup(t, c.path, c.bounds, gather, opts)
				generateLikeWhole(t, m, prompts, want, 16, gather)
				st := g.Stats()
				require.Positive(t, st.Passes)
				require.Equal(t, st.Passes*int64(m.TensorExchanges()), st.Exchanges)
				if gather {
					require.Equal(t, 4*m.Info().Layers+1, m.TensorExchanges())
				}
			})
		}
	}
}

// TestTensorPairwise: a head with one member swaps parts with it
// (helloPairwise), a head with two members runs the star, and a head or a
// member of the version before (the star only) makes a pair fall back to
// the star; every way generates what the whole model does, bit for bit
// with ShardSpec.Gather. The synthesized model's logits (20,000 values:
// 40 KB per shard) are too large to cross early, so the last exchange of
// each pass goes after the member's part.
func TestTensorPairwise(t *testing.T) {
	opts := engine.Options{Threads: 1, ContextSize: 128}
	cfg := synth.DefaultConfig()
	cfg.KVHeads, cfg.Vocab = 2, 20000
	bigVocab := filepath.Join(t.TempDir(), "big-vocab.gguf")
	require.NoError(t, synth.Write(bigVocab, cfg))
	cases := []struct {
		name                 string
		path                 string
		bounds               []int
		headStar, memberStar bool
		pairwise             bool
	}{
		{"pair", storiesPath, []int{0, 2, 4}, false, false, true},
		{"pair, logits too large to cross early", bigVocab, []int{0, 1, 2}, false, false, true},
		{"uneven pair", q4kPath, []int{0, 3, 4}, false, false, true},
		{"three shards", storiesPath, []int{0, 1, 2, 4}, false, false, false},
		{"older member", storiesPath, []int{0, 2, 4}, false, true, false},
		{"older head", storiesPath, []int{0, 2, 4}, true, false, false},
	}
	for _, c := range cases {
		for _, gather := range []bool{true, false} {
			t.Run(fmt.Sprint(c.name, " gather=", gather), func(t *testing.T) {
				ctx := context.Background()
				prompts, want := wholeRun(t, c.path, opts, []string{"Once upon a time", "The little dog"}, 12)
				var dials []Dialer
				for i := 1; i+1 < len(c.bounds); i++ {
					st := startMemberStar(t, c.path, c.bounds[i], c.bounds[i+1], "", gather, opts, c.memberStar)
					dials = append(dials, TCPDialer(st.addr))
				}
				g, err := NewTensorGroup(TensorGroupConfig{Members: dials, KVHi: c.bounds[1], Timeout: 10 * time.Second, starOnly: c.headStar})
				require.NoError(t, err)
				t.Cleanup(func() { g.Close() })
				require.NoError(t, g.Start(ctx))
				require.Equal(t, c.pairwise, g.pairwise)
				m, err := engine.LoadShard(c.path, engine.ShardSpec{Mode: engine.Tensor, KVHi: c.bounds[1], Peers: g, Gather: gather}, opts)
				require.NoError(t, err)
				t.Cleanup(func() { m.Close() })
				generateLikeWhole(t, m, prompts, want, 12, gather)
				st := g.Stats()
				require.Equal(t, st.Passes*int64(m.TensorExchanges()), st.Exchanges)
			})
		}
	}
}

// TestTensorMemberFailure: a member that goes away fails the generation
// in flight with ErrStage; once it serves again, the group reconnects and
// matches the whole model.
func TestTensorMemberFailure(t *testing.T) {
	opts := engine.Options{Threads: 1, ContextSize: 128}
	prompts, want := wholeRun(t, storiesPath, opts, []string{"Tom and Sue"}, 24)
	m, g, members := startTensorGroup(t, storiesPath, []int{0, 2, 4}, true, opts)
	s := m.NewSession()
	n := 0
	_, err := s.Generate(context.Background(), engine.GenerateRequest{Prompt: prompts[0], MaxTokens: 24}, func(engine.Token) error {
		if n++; n == 3 {
			members[0].stop()
		}
		return nil
	})
	require.ErrorIs(t, err, ErrStage)
	require.Empty(t, s.Tokens())
	epoch := g.Epoch()
	startMember(t, storiesPath, 2, 4, members[0].addr, true, opts)
	got, err := generate(context.Background(), s, prompts[0], 24)
	require.NoError(t, err)
	require.Equal(t, want[0], got)
	require.GreaterOrEqual(t, g.Epoch(), epoch)

	// A pipeline stage is not a tensor member, and a second head is refused.
	p := startStage(t, storiesPath, 2, 5, "", opts)
	g2, err := NewTensorGroup(TensorGroupConfig{Members: []Dialer{TCPDialer(p.addr)}, KVHi: 2})
	require.NoError(t, err)
	require.ErrorIs(t, g2.Start(context.Background()), ErrMismatch)
	g3, err := NewTensorGroup(TensorGroupConfig{Members: []Dialer{TCPDialer(members[0].addr)}, KVHi: 2})
	require.NoError(t, err)
	defer g3.Close()
	require.NoError(t, g3.Start(context.Background())) // the handshake is answered...
	err = g3.Begin(context.Background(), []engine.RemoteSegment{{Session: 1, N: 1}}, []int32{1})
	if err == nil {
		_, err = g3.AllGather(context.Background(), []float32{1})
	}
	require.Error(t, err) // ...but the member serves its first head only
}
