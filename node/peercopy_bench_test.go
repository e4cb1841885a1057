package node_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/cputime"
	"github.com/rbee-project/rbee/internal/localcopy"
	"github.com/rbee-project/rbee/model/quant"
	"github.com/rbee-project/rbee/model/synth"
	"github.com/rbee-project/rbee/node/client"
	"github.com/rbee-project/rbee/node/nodetest"
)

// BenchmarkModelPeerCopy copies a 256 MiB model from node0 to node1 of an
// in-process cluster over the real blob protocol (TCP + PSK + Noise +
// yamux on loopback) and, in the same iteration, copies the same file
// locally (io.Copy file to file, fsync) as the baseline. It reports both
// rates and their ratio. Each iteration deletes node1's copy first.
func BenchmarkModelPeerCopy(b *testing.B) {
	c := nodetest.New(b, 2)
	cfg := synth.DefaultConfig()
	cfg.Dim, cfg.Layers, cfg.Heads, cfg.KVHeads, cfg.FF, cfg.Type = 1024, 1, 8, 8, 1024, quant.F32
	cfg.Vocab = 256 << 20 / (1024 * 4)
	src := filepath.Join(b.TempDir(), "bench.gguf")
	require.NoError(b, synth.Write(src, cfg))
	st, err := os.Stat(src)
	require.NoError(b, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	do := func(n int, req map[string]any, out any) {
		require.NoError(b, client.New(c.Nodes[n].URL(), c.Nodes[n].AdminKey()).Result(ctx, req, out, nil))
	}
	var e struct {
		ID     string `json:"id"`
		SHA256 string `json:"sha256"`
	}
	do(0, map[string]any{"operation": "model_download", "model": src}, &e)
	require.Eventually(b, func() bool {
		for _, h := range c.Nodes[1].Registry().Models() {
			if h.SHA256 == e.SHA256 {
				return true
			}
		}
		return false
	}, nodetest.WaitTimeout, 20*time.Millisecond)
	dst := filepath.Join(b.TempDir(), "copy.gguf")
	var peer, local, peerCPU, localCPU time.Duration
	b.SetBytes(st.Size())
	b.ResetTimer()
	for b.Loop() {
		t0, c0 := time.Now(), cpuNow(b)
		require.NoError(b, localcopy.Copy(src, dst))
		local += time.Since(t0)
		localCPU += cpuNow(b) - c0
		require.NoError(b, os.Remove(dst))

		var e2 struct {
			ID     string `json:"id"`
			SHA256 string `json:"sha256"`
			Source string `json:"source"`
		}
		t1, c1 := time.Now(), cpuNow(b)
		do(1, map[string]any{"operation": "model_download", "model": "http://127.0.0.1:9/bench.gguf#sha256=" + e.SHA256}, &e2)
		peer += time.Since(t1)
		peerCPU += cpuNow(b) - c1
		require.Equal(b, e.SHA256, e2.SHA256)
		require.Equal(b, "peer", e2.Source)
		do(1, map[string]any{"operation": "model_delete", "id": e2.ID}, nil)
	}
	mibps := func(d time.Duration) float64 {
		return float64(st.Size()) * float64(b.N) / (1 << 20) / d.Seconds()
	}
	b.ReportMetric(mibps(peer), "peer-MiB/s")
	b.ReportMetric(mibps(local), "local-MiB/s")
	b.ReportMetric(local.Seconds()/peer.Seconds(), "ratio")
	// CPU time per byte (both nodes and the copy, user + system) does not
	// depend on what else the machine runs, unlike the rates.
	perByte := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(st.Size()*int64(b.N)) }
	b.ReportMetric(perByte(peerCPU), "peer-cpu-ns/B")
	b.ReportMetric(perByte(localCPU), "local-cpu-ns/B")
}

// cpuNow is this process's CPU time so far.
func cpuNow(b *testing.B) time.Duration {
	d, err := cputime.Self()
	if err != nil {
		b.Skip(err)
	}
	return d
}
