package shard

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/pinnedtls"
	"github.com/rbee-project/rbee/internal/spinconn"
	"github.com/rbee-project/rbee/model/engine"
	"github.com/rbee-project/rbee/model/quant"
	"github.com/rbee-project/rbee/model/synth"
)

// tlsListener hands out TLS connections over polling TCP, as a shard
// worker's direct stage port does.
type tlsListener struct {
	net.Listener
	cfg *tls.Config
}

func (l tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return tls.Server(spinconn.Wrap(c, spinconn.DefaultSpin), l.cfg), nil
}

// BenchmarkPipelineDecode compares greedy decoding (32-token generations
// after an 8-token prompt) of one unsharded model with the same model
// split into two pipeline stages, and into two tensor shards, joined by
// loopback TCP connections, one thread per shard. RBEE_BENCH_MODEL picks
// a GGUF file instead of the synthesized one (dim 512, 8 layers, 8 heads
// and 2 KV heads of 64, FFN 1024, Q4_K: its tensor split falls on the
// 256-value blocks, so its Wo and Wdown are all-reduced); the tensor group
// also over TLS on polling TCP, as a direct stage port carries it.
// Reported: tokens/s, and for the pipeline
// the cost of the exchanges themselves (round trip minus the stage's
// compute) per token and per layer of the model.
func BenchmarkPipelineDecode(b *testing.B) {
	path := os.Getenv("RBEE_BENCH_MODEL")
	if path == "" {
		cfg := synth.DefaultConfig()
		cfg.Dim, cfg.Layers, cfg.Heads, cfg.KVHeads, cfg.FF, cfg.Vocab, cfg.Type = 512, 8, 8, 2, 1024, 4096, quant.Q4_K
		path = filepath.Join(b.TempDir(), "synth.gguf")
		require.NoError(b, synth.Write(path, cfg))
	}
	opts := engine.Options{Threads: 1, ContextSize: 256}
	prompt := []int32{1, 300, 301, 302, 303, 304, 305, 306}
	run := func(b *testing.B, m *engine.Model) int {
		s := m.NewSession()
		n := 0
		for i := 0; i < b.N; i++ {
			s.Reset()
			_, err := s.Generate(context.Background(), engine.GenerateRequest{Prompt: prompt, MaxTokens: 32}, func(tk engine.Token) error {
				if tk.ID >= 0 {
					n++
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		return n
	}
	b.Run("whole", func(b *testing.B) {
		m, err := engine.Load(path, opts)
		require.NoError(b, err)
		defer m.Close()
		b.ResetTimer()
		start := time.Now()
		n := run(b, m)
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "tokens/s")
	})
	b.Run("2-stage-tcp", func(b *testing.B) {
		whole, err := engine.Load(path, opts)
		require.NoError(b, err)
		layers := whole.Info().Layers
		whole.Close()
		m, p, _ := startPipeline(b, path, []int{0, layers / 2, layers}, opts)
		b.ResetTimer()
		start := time.Now()
		n := run(b, m)
		el := time.Since(start)
		st := p.Stats()
		b.ReportMetric(float64(n)/el.Seconds(), "tokens/s")
		if st.Passes > 0 {
			exch := float64((st.RoundTrip - st.Compute).Microseconds()) / float64(st.Passes)
			b.ReportMetric(exch, "exch-µs/pass")
			b.ReportMetric(exch/float64(layers), "exch-µs/layer")
			b.ReportMetric(float64(st.Compute.Microseconds())/float64(st.Passes), "stage-µs/pass")
		}
	})
	// A tensor group over TLS on polling TCP, as a shard worker's direct
	// stage port carries it between nodes.
	b.Run("2-shard-tensor-tls", func(b *testing.B) {
		whole, err := engine.Load(path, opts)
		require.NoError(b, err)
		kv := whole.Info().KVHeads
		whole.Close()
		cert, fp, err := pinnedtls.SelfSigned("bench-stage")
		require.NoError(b, err)
		client, err := pinnedtls.Client(fp)
		require.NoError(b, err)
		link := NewMemberLink()
		mm, err := engine.LoadShard(path, engine.ShardSpec{Mode: engine.Tensor, KVLo: kv / 2, KVHi: kv, Peers: link}, opts)
		require.NoError(b, err)
		b.Cleanup(func() { mm.Close() })
		srv, err := NewServer(ServerConfig{Model: mm, Link: link})
		require.NoError(b, err)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(b, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.Serve(ctx, tlsListener{Listener: ln, cfg: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}})
		}()
		b.Cleanup(func() { cancel(); <-done })
		dial := func(ctx context.Context) (io.ReadWriteCloser, error) {
			var d net.Dialer
			raw, err := d.DialContext(ctx, "tcp", ln.Addr().String())
			if err != nil {
				return nil, err
			}
			c := tls.Client(spinconn.Wrap(raw, spinconn.DefaultSpin), client)
			if err := c.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, err
			}
			return c, nil
		}
		g, err := NewTensorGroup(TensorGroupConfig{Members: []Dialer{dial}, KVHi: kv / 2, Timeout: 10 * time.Second})
		require.NoError(b, err)
		b.Cleanup(func() { g.Close() })
		require.NoError(b, g.Start(context.Background()))
		m, err := engine.LoadShard(path, engine.ShardSpec{Mode: engine.Tensor, KVHi: kv / 2, Peers: g}, opts)
		require.NoError(b, err)
		b.Cleanup(func() { m.Close() })
		b.ResetTimer()
		start := time.Now()
		n := run(b, m)
		el := time.Since(start)
		b.ReportMetric(float64(n)/el.Seconds(), "tokens/s")
		if st := g.Stats(); st.Passes > 0 {
			b.ReportMetric(float64(st.RoundTrip.Microseconds())/float64(st.Passes), "gather-µs/pass")
		}
	})
	// Tensor groups, with the all-reduces and with Gather (twice the
	// exchanges), on plain loopback and with 0.2 ms added each way (a
	// LAN's latency; delayed, in user space: timers overshoot, and
	// "added-µs" reports by how much).
	for _, lat := range []time.Duration{0, 200 * time.Microsecond} {
		for _, gather := range []bool{false, true} {
			name := "2-shard-tensor-tcp"
			if gather {
				name += "-gather"
			}
			if lat > 0 {
				name += "-" + lat.String()
			}
			b.Run(name, func(b *testing.B) {
				whole, err := engine.Load(path, opts)
				require.NoError(b, err)
				kv, layers := whole.Info().KVHeads, whole.Info().Layers
				whole.Close()
				var wrap func(Dialer) Dialer
				dl := &delayed{d: lat}
				if lat > 0 {
					wrap = dl.wrap
				}
				m, g, _ := startTensorGroupVia(b, path, []int{0, kv / 2, kv}, gather, opts, wrap)
				b.ResetTimer()
				start := time.Now()
				n := run(b, m)
				el := time.Since(start)
				st := g.Stats()
				b.ReportMetric(float64(n)/el.Seconds(), "tokens/s")
				if st.Passes > 0 {
					// The head's time in exchanges, waiting for the
					// member's share of the compute included.
					b.ReportMetric(float64(st.Exchanges)/float64(st.Passes), "exch/pass")
					b.ReportMetric(float64(st.RoundTrip.Microseconds())/float64(st.Passes), "gather-µs/pass")
					b.ReportMetric(float64(st.RoundTrip.Microseconds())/float64(st.Passes*int64(layers)), "gather-µs/layer")
				}
				if k := dl.n.Load(); k > 0 {
					b.ReportMetric(float64(dl.added.Load())/float64(k)/1e3, "added-µs")
				}
			})
		}
	}
}
