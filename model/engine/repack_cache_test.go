//go:build linux

package engine

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/quant"
	"github.com/rbee-project/rbee/model/synth"
)

// repackFiles lists the complete cache files in dir.
func repackFiles(t *testing.T, dir string) []string {
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), repackExt) && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out
}

// TestRepackCache: the first load writes the cache file, the next maps
// it without changing it, both give the file layout's logits bit for
// bit; a damaged file is replaced, a newer model file replaces its
// model's old cache file, and each pipeline stage keeps its own.
func TestRepackCache(t *testing.T) {
	cfg := synth.DefaultConfig()
	cfg.Type, cfg.Dim, cfg.FF, cfg.Heads, cfg.KVHeads, cfg.Layers = quant.Q4_0, 128, 256, 4, 2, 3
	path := writeSynth(t, cfg)
	dir := filepath.Join(t.TempDir(), "repack")
	plain, err := Load(path, Options{Threads: 2, ContextSize: 128, NoRepack: true})
	require.NoError(t, err)
	defer plain.Close()
	if _, ok := plain.layers[0].wq.RepackedSize(); !ok {
		t.Skip("no repacked kernel on this CPU")
	}
	ids := plain.Tokenizer().Encode("Once upon a time there was a little girl", true, false)
	logits := func(m *Model) []uint32 {
		l, err := m.NewSession().eval(context.Background(), ids)
		require.NoError(t, err)
		out := make([]uint32, len(l))
		for i, v := range l {
			out[i] = math.Float32bits(v)
		}
		return out
	}
	// The copies in memory, without a cache: what every load from the
	// cache must give, bit for bit. (Q4_0's repacked kernel has a float
	// contract of its own, so the file layout's logits differ slightly.)
	mem, err := Load(path, Options{Threads: 2, ContextSize: 128})
	require.NoError(t, err)
	defer mem.Close()
	want := logits(mem)
	load := func() *Model {
		m, err := Load(path, Options{Threads: 2, ContextSize: 128, RepackCache: dir})
		require.NoError(t, err)
		t.Cleanup(func() { m.Close() })
		require.True(t, m.layers[0].wq.Repacked())
		require.Equal(t, want, logits(m))
		return m
	}

	load()
	files := repackFiles(t, dir)
	require.Len(t, files, 1)
	st1, err := os.Stat(files[0])
	require.NoError(t, err)
	first, err := os.ReadFile(files[0])
	require.NoError(t, err)

	load() // maps the file: unchanged
	st2, err := os.Stat(files[0])
	require.NoError(t, err)
	require.Equal(t, st1.ModTime(), st2.ModTime())
	require.Equal(t, []string{files[0]}, repackFiles(t, dir))

	// A damaged file (a flipped byte in the header) is written again.
	bad := append([]byte(nil), first...)
	bad[20] ^= 0xff
	require.NoError(t, os.WriteFile(files[0], bad, 0o644))
	load()
	got, err := os.ReadFile(files[0])
	require.NoError(t, err)
	require.Equal(t, first, got)
	// A truncated one too.
	require.NoError(t, os.Truncate(files[0], int64(len(first)-4096)))
	load()
	got, err = os.ReadFile(files[0])
	require.NoError(t, err)
	require.Equal(t, first, got)

	// Each part of the model (here two last stages of other ranges) has
	// its own file; neither removes the other's or the whole model's.
	for lo := 1; lo <= 2; lo++ {
		s, err := LoadShard(path, ShardSpec{Mode: Pipeline, Lo: lo, Hi: cfg.Layers}, Options{Threads: 1, ContextSize: 128, RepackCache: dir})
		require.NoError(t, err)
		require.True(t, s.layers[0].wq.Repacked())
		s.Close()
	}
	require.Len(t, repackFiles(t, dir), 3)

	// A newer file of the model replaces its old cache file (the stages'
	// stay: they are other parts).
	cfg.Seed++
	require.NoError(t, os.Remove(path))
	newer := writeSynth(t, cfg)
	require.NoError(t, os.Rename(newer, path))
	m, err := Load(path, Options{Threads: 2, ContextSize: 128, RepackCache: dir})
	require.NoError(t, err)
	defer m.Close()
	after := repackFiles(t, dir)
	require.Len(t, after, 3)
	require.NotContains(t, after, files[0])
}

// TestRepackCacheUnwritable: a cache directory that cannot be made leaves
// the copies in memory, with the logits of a load without a cache.
func TestRepackCacheUnwritable(t *testing.T) {
	cfg := synth.DefaultConfig()
	cfg.Type, cfg.Dim, cfg.FF, cfg.Heads, cfg.KVHeads = quant.Q4_0, 128, 256, 4, 2
	path := writeSynth(t, cfg)
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	m, err := Load(path, Options{Threads: 1, ContextSize: 128, RepackCache: filepath.Join(file, "repack")})
	require.NoError(t, err)
	defer m.Close()
	plain, err := Load(path, Options{Threads: 1, ContextSize: 128, NoRepack: true})
	require.NoError(t, err)
	defer plain.Close()
	require.Equal(t, plain.layers[0].wq.Data, m.layers[0].wq.Data)
	mem, err := Load(path, Options{Threads: 1, ContextSize: 128})
	require.NoError(t, err)
	defer mem.Close()
	require.Equal(t, mem.layers[0].wq.Repacked(), m.layers[0].wq.Repacked())
	ids := m.Tokenizer().Encode("Once upon a time", true, false)
	a, err := m.NewSession().eval(context.Background(), ids)
	require.NoError(t, err)
	a = append([]float32(nil), a...)
	b, err := mem.NewSession().eval(context.Background(), ids)
	require.NoError(t, err)
	require.Equal(t, b, a)
}

// TestRepackCacheConcurrentLoads: several processes' workers of one model
// starting at once with no cache file yet (here: Loads at once) each
// repack into a temporary file of their own and rename it into place; all
// of them load, give the same logits as a load without the cache, and
// leave one cache file that a later load maps.
func TestRepackCacheConcurrentLoads(t *testing.T) {
	cfg := synth.DefaultConfig()
	cfg.Type, cfg.Dim, cfg.FF, cfg.Heads, cfg.KVHeads, cfg.Layers = quant.Q8_0, 256, 512, 4, 2, 3
	path := writeSynth(t, cfg)
	dir := filepath.Join(t.TempDir(), "repack")
	mem, err := Load(path, Options{Threads: 1, ContextSize: 128})
	require.NoError(t, err)
	defer mem.Close()
	if !mem.layers[0].wq.Repacked() {
		t.Skip("no repacked kernel for Q8_0 on this CPU")
	}
	ids := []int32{1, 300, 301, 302, 303}
	logits := func(m *Model) []float32 {
		l, err := m.NewSession().eval(context.Background(), ids)
		require.NoError(t, err)
		return slices.Clone(l)
	}
	want := logits(mem)

	const loads = 4
	models := make([]*Model, loads)
	errs := make([]error, loads)
	var wg sync.WaitGroup
	for i := range models {
		wg.Add(1)
		go func() {
			defer wg.Done()
			models[i], errs[i] = Load(path, Options{Threads: 1, ContextSize: 128, RepackCache: dir})
		}()
	}
	wg.Wait()
	for i, m := range models {
		require.NoError(t, errs[i])
		require.Equal(t, want, logits(m), "load %d", i)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*"+repackExt))
	require.NoError(t, err)
	require.Len(t, files, 1, "one cache file")
	tmp, err := filepath.Glob(filepath.Join(dir, ".tmp-*"))
	require.NoError(t, err)
	require.Empty(t, tmp, "no temporary file left")
	// The loads that lost the race keep their own mappings: still good
	// after the others close, and a later load maps the file left.
	for _, m := range models[1:] {
		require.NoError(t, m.Close())
	}
	require.Equal(t, want, logits(models[0]))
	require.NoError(t, models[0].Close())
	later, err := Load(path, Options{Threads: 1, ContextSize: 128, RepackCache: dir})
	require.NoError(t, err)
	defer later.Close()
	require.Equal(t, want, logits(later))
}
