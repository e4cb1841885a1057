package shard

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/engine"
	"github.com/rbee-project/rbee/model/quant"
	"github.com/rbee-project/rbee/model/synth"
)

// BenchmarkPipelineDecode compares greedy decoding (32-token generations
// after an 8-token prompt) of one unsharded model with the same model
// split into two pipeline stages, and into two tensor shards, joined by
// loopback TCP connections, one thread per shard. RBEE_BENCH_MODEL picks
// a GGUF file instead of the synthesized one (dim 512, 8 layers, 8 heads
// and 2 KV heads of 64, FFN 1024, Q4_K: its tensor split falls on the
// 256-value blocks, so its Wo and Wdown are all-reduced). Reported: tokens/s, and for the pipeline
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
