package shard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/engine"
)

const (
	storiesPath = "../../testdata/model/stories260K.gguf"
	q4kPath     = "../../testdata/gguf/kquant/kquant-Q4_K.gguf"
	qwenPath    = "../../testdata/gguf/qwen2/qwen2-random-F32.gguf"
)

// stageServer runs layers [lo, hi) of path as a Server on a loopback TCP
// listener (on addr, or a free port when addr is empty).
type stageServer struct {
	srv    *Server
	addr   string
	cancel context.CancelFunc
	done   chan struct{}
}

func startStage(t testing.TB, path string, lo, hi int, addr string, opts engine.Options) *stageServer {
	t.Helper()
	m, err := engine.LoadShard(path, engine.ShardSpec{Lo: lo, Hi: hi}, opts)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	srv, err := NewServer(ServerConfig{Model: m})
	require.NoError(t, err)
	return serveOn(t, srv, addr)
}

// serveOn runs srv on a loopback TCP listener (on addr, or a free port).
func serveOn(t testing.TB, srv *Server, addr string) *stageServer {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		// A just-closed listener's port may take a moment to be free again.
		if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	st := &stageServer{srv: srv, addr: ln.Addr().String(), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(st.done)
		_ = srv.Serve(ctx, ln)
	}()
	t.Cleanup(st.stop)
	return st
}

func (st *stageServer) stop() {
	st.cancel()
	<-st.done
	st.srv.Close()
}

// startPipeline starts the later stages of path split at bounds over TCP
// and loads the first stage driving them.
func startPipeline(t testing.TB, path string, bounds []int, opts engine.Options) (*engine.Model, *Pipeline, []*stageServer) {
	t.Helper()
	var stages []*stageServer
	var dials []Dialer
	for i := 1; i+1 < len(bounds); i++ {
		st := startStage(t, path, bounds[i], bounds[i+1], "", opts)
		stages = append(stages, st)
		dials = append(dials, TCPDialer(st.addr))
	}
	p, err := NewPipeline(PipelineConfig{Stages: dials, Lo: bounds[1], Timeout: 10 * time.Second})
	require.NoError(t, err)
	require.NoError(t, p.Start(context.Background()))
	t.Cleanup(func() { p.Close() })
	m, err := engine.LoadShard(path, engine.ShardSpec{Lo: 0, Hi: bounds[1], Next: p}, opts)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m, p, stages
}

type genOut struct {
	ids      []int32
	logprobs []float32
	text     string
}

func generate(ctx context.Context, s *engine.Session, prompt []int32, n int) (genOut, error) {
	var o genOut
	_, err := s.Generate(ctx, engine.GenerateRequest{Prompt: prompt, MaxTokens: n, Logprobs: true}, func(tk engine.Token) error {
		if tk.ID >= 0 {
			o.ids = append(o.ids, tk.ID)
			o.logprobs = append(o.logprobs, tk.Logprob)
		}
		o.text += tk.Text
		return nil
	})
	return o, err
}

func wholeRun(t *testing.T, path string, opts engine.Options, prompts []string, n int) ([][]int32, []genOut) {
	t.Helper()
	m, err := engine.Load(path, opts)
	require.NoError(t, err)
	defer m.Close()
	var ps [][]int32
	var outs []genOut
	for _, text := range prompts {
		p := m.Tokenizer().Encode(text, m.Tokenizer().AddBOS(), true)
		o, err := generate(context.Background(), m.NewSession(), p, n)
		require.NoError(t, err)
		ps = append(ps, p)
		outs = append(outs, o)
	}
	return ps, outs
}

// TestPipelineOverTCP: fixture models split into 2 and 3 stages whose
// later stages are Servers on loopback TCP generate exactly what the whole
// model generates (ids and bit-identical log-probabilities), one session
// after the other and two batched together.
func TestPipelineOverTCP(t *testing.T) {
	opts := engine.Options{Threads: 1, ContextSize: 128}
	cases := []struct {
		path   string
		bounds []int
	}{
		{storiesPath, []int{0, 2, 5}},
		{storiesPath, []int{0, 1, 4, 5}},
		{q4kPath, []int{0, 1, 2}},
		{qwenPath, []int{0, 1, 2}},
	}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.path[len(c.path)-20:], c.bounds), func(t *testing.T) {
			prompts, want := wholeRun(t, c.path, opts, []string{"Once upon a time", "The little dog"}, 16)
			m, p, _ := startPipeline(t, c.path, c.bounds, opts)
			require.Len(t, p.Stages(), len(c.bounds)-2)
			for i, pr := range prompts {
				got, err := generate(context.Background(), m.NewSession(), pr, 16)
				require.NoError(t, err)
				require.Equal(t, want[i], got)
			}
			// Two sequences in one step.
			b := m.NewBatch()
			var qs []*engine.Sequence
			for _, pr := range prompts {
				q, err := m.NewSession().Begin(engine.GenerateRequest{Prompt: pr, MaxTokens: 16, Logprobs: true})
				require.NoError(t, err)
				qs = append(qs, q)
			}
			got := make([]genOut, len(qs))
			for !qs[0].Done() || !qs[1].Done() {
				var live []*engine.Sequence
				for _, q := range qs {
					if !q.Done() {
						live = append(live, q)
					}
				}
				require.NoError(t, b.Step(live))
				for i, q := range qs {
					if !containsSeq(live, q) {
						continue
					}
					for _, tk := range q.Tokens() {
						if tk.ID >= 0 {
							got[i].ids = append(got[i].ids, tk.ID)
							got[i].logprobs = append(got[i].logprobs, tk.Logprob)
						}
						got[i].text += tk.Text
					}
				}
			}
			require.Equal(t, want, got)
			st := p.Stats()
			require.Positive(t, st.Passes)
			require.Equal(t, st.Passes*int64(len(c.bounds)-2), st.Exchanges)
			require.Greater(t, st.RoundTrip, st.Compute)
		})
	}
}

func containsSeq(qs []*engine.Sequence, q *engine.Sequence) bool {
	for _, x := range qs {
		if x == q {
			return true
		}
	}
	return false
}

// TestStageFailure: a stage that goes away fails the generation in flight
// with ErrStage; once a stage serves the same layers again (a restart on
// the same address) the next generation reconnects and matches the whole
// model.
func TestStageFailure(t *testing.T) {
	opts := engine.Options{Threads: 1, ContextSize: 128}
	prompts, want := wholeRun(t, storiesPath, opts, []string{"Tom and Sue"}, 24)
	m, p, stages := startPipeline(t, storiesPath, []int{0, 2, 5}, opts)
	s := m.NewSession()
	ctx := context.Background()
	n := 0
	_, err := s.Generate(ctx, engine.GenerateRequest{Prompt: prompts[0], MaxTokens: 24}, func(engine.Token) error {
		if n++; n == 3 {
			stages[0].stop() // the stage dies mid-generation
		}
		return nil
	})
	require.ErrorIs(t, err, ErrStage)
	require.Less(t, n, 24)
	require.Empty(t, s.Tokens())
	epoch := p.Epoch()

	// Nobody serves the layers: the next pass fails at once too.
	_, err = generate(ctx, s, prompts[0], 4)
	require.ErrorIs(t, err, ErrStage)

	startStage(t, storiesPath, 2, 5, stages[0].addr, opts)
	got, err := generate(ctx, s, prompts[0], 24)
	require.NoError(t, err)
	require.Equal(t, want[0], got)
	require.Greater(t, p.Epoch(), epoch-1)
	require.Positive(t, p.Stats().Reconnects)
}

// TestPipelineMismatch: stages that do not make up the model are refused
// at Start.
func TestPipelineMismatch(t *testing.T) {
	opts := engine.Options{Threads: 1, ContextSize: 64}
	a := startStage(t, storiesPath, 2, 4, "", opts)
	b := startStage(t, storiesPath, 4, 5, "", opts)
	q := startStage(t, qwenPath, 1, 2, "", opts)
	cases := []struct {
		name  string
		lo    int
		addrs []string
	}{
		{"gap", 2, []string{b.addr}},
		{"overlap", 3, []string{a.addr, b.addr}},
		{"short", 2, []string{a.addr}},
		{"other model", 2, []string{a.addr, q.addr}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var dials []Dialer
			for _, ad := range c.addrs {
				dials = append(dials, TCPDialer(ad))
			}
			p, err := NewPipeline(PipelineConfig{Stages: dials, Lo: c.lo})
			require.NoError(t, err)
			defer p.Close()
			require.ErrorIs(t, p.Start(context.Background()), ErrMismatch)
		})
	}
	// A client speaking another version gets an error frame, then EOF.
	conn, err := net.Dial("tcp", a.addr)
	require.NoError(t, err)
	defer conn.Close()
	_, err = writeFrame(conn, &frame{typ: frameHello, proto: "/rbee/shard/9.0.0"}, nil)
	require.NoError(t, err)
	var f frame
	_, err = readFrame(conn, 1<<16, nil, &f)
	require.NoError(t, err)
	require.Equal(t, frameError, f.typ)
	_, err = readFrame(conn, 1<<16, nil, &f)
	require.Error(t, err)
}

// TestPipelineContextCancel: a cancelled context ends a pass that waits
// for a stage (here one that never answers) at once, with ctx's error.
func TestPipelineContextCancel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var f frame
		if _, err := readFrame(c, 1<<16, nil, &f); err != nil {
			return
		}
		_, _ = writeFrame(c, &frame{typ: frameWelcome, info: StageInfo{Lo: 1, Hi: 2, Layers: 2, Dim: 4, Vocab: 8}}, nil)
		buf := make([]byte, 1<<16)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	}()
	p, err := NewPipeline(PipelineConfig{Stages: []Dialer{TCPDialer(ln.Addr().String())}, Lo: 1})
	require.NoError(t, err)
	defer p.Close()
	require.NoError(t, p.Start(context.Background()))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = p.Forward(ctx, []engine.RemoteSegment{{Session: 1, N: 1, Logits: true}}, make([]float32, 4), make([]float32, 8))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, err, ErrStage)
	require.Less(t, time.Since(start), 5*time.Second)
	require.Equal(t, uint64(2), p.Epoch())
}

// TestFrameRoundTrip: every frame type decodes to what was encoded.
func TestFrameRoundTrip(t *testing.T) {
	cases := []frame{
		{typ: frameHello, proto: ProtocolID},
		{typ: frameWelcome, info: StageInfo{Lo: 2, Hi: 5, Layers: 5, Dim: 64, Vocab: 512, Instance: 1 << 60}},
		{typ: frameForward, id: 7, segs: []Segment{{Session: 3, Pos: 10, N: 2}, {Session: 9, N: 1, Logits: true}}, rows: 3, width: 2,
			data: []float32{1, -2, 3.5, 0, float32(1e-30), -0.25}},
		{typ: frameResult, id: 7, compute: 12345, rows: 1, width: 3, data: []float32{0.5, 1, 2}},
		{typ: frameError, id: 7, code: codeStateLost, msg: "lost"},
	}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.typ), func(t *testing.T) {
			var buf netBuffer
			_, err := writeFrame(&buf, &c, nil)
			require.NoError(t, err)
			var got frame
			_, err = readFrame(&buf, 1<<20, nil, &got)
			require.NoError(t, err)
			if len(c.segs) == 0 {
				c.segs = got.segs[:0]
			}
			if c.data == nil {
				c.data = got.data
			}
			require.Equal(t, c, got)
		})
	}
	// A length over the cap is refused before anything is allocated.
	var buf netBuffer
	_, err := writeFrame(&buf, &frame{typ: frameResult, rows: 64, width: 64, data: make([]float32, 64*64)}, nil)
	require.NoError(t, err)
	var f frame
	_, err = readFrame(&buf, 1024, nil, &f)
	require.True(t, errors.Is(err, ErrProtocol))
}

// netBuffer is an in-memory byte stream.
type netBuffer struct{ b []byte }

func (n *netBuffer) Write(p []byte) (int, error) { n.b = append(n.b, p...); return len(p), nil }
func (n *netBuffer) Read(p []byte) (int, error) {
	if len(n.b) == 0 {
		return 0, errors.New("empty")
	}
	k := copy(p, n.b)
	n.b = n.b[k:]
	return k, nil
}
