package engine

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/hugepage"
	"github.com/rbee-project/rbee/model/quant"
	"github.com/rbee-project/rbee/model/synth"
)

// mappedRSS returns the resident bytes of this process's mappings of path
// (/proc/self/smaps): the pages of the file this process has touched.
func mappedRSS(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	require.NoError(t, err)
	defer f.Close()
	var rss int64
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			in = strings.HasSuffix(line, " "+path)
			continue
		}
		if in && len(fields) == 3 && fields[0] == "Rss:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			require.NoError(t, err)
			rss += kb << 10
		}
	}
	require.NoError(t, sc.Err())
	return rss
}

// TestShardTouchesOnlyItsShare: a middle stage that has run forward passes
// has only its own layers' part of the mapped file resident (plus the
// header and the vocabulary it reads), not the embedding, the other
// layers or the output; the whole model has all of it resident.
func TestShardTouchesOnlyItsShare(t *testing.T) {
	if _, err := os.Stat("/proc/self/smaps"); err != nil {
		t.Skip("no /proc/self/smaps")
	}
	cfg := synth.DefaultConfig()
	cfg.Dim, cfg.Layers, cfg.Heads, cfg.KVHeads, cfg.FF, cfg.Vocab = 256, 8, 4, 4, 768, 4096
	path := writeSynth(t, cfg)
	opts := Options{Threads: 1, ContextSize: 64}

	m, err := LoadShard(path, ShardSpec{Lo: 3, Hi: 5}, opts)
	require.NoError(t, err)
	defer m.Close()
	var own, total int64
	for i := range m.file.Tensors {
		ti := &m.file.Tensors[i]
		total += int64(ti.Size)
		if strings.HasPrefix(ti.Name, "blk.3.") || strings.HasPrefix(ti.Name, "blk.4.") {
			own += int64(ti.Size)
		}
	}
	s := m.NewSession()
	b := m.NewBatch()
	h := make([]float32, 4*cfg.Dim)
	for i := range h {
		h[i] = float32(i%7) * 0.1
	}
	_, err = b.StageForward(context.Background(), []StageSegment{{Session: s, Pos: 0, N: 4}}, h)
	require.NoError(t, err)
	rss := mappedRSS(t, path)
	t.Logf("stage [3, 5): %d KiB resident of %d KiB mapped; its layers: %d KiB", rss>>10, total>>10, own>>10)
	require.GreaterOrEqual(t, rss, own*9/10, "the stage's layers were read")
	// Slack: the header and vocabulary (~100 KiB here) and the kernel's
	// fault-around (64 KiB per fault).
	require.Less(t, rss, own+1<<20, "pages outside the stage were touched")

	w, err := Load(path, opts)
	require.NoError(t, err)
	defer w.Close()
	before := mappedRSS(t, path)
	_, err = w.NewSession().eval(context.Background(), []int32{1, 300, 301, 302})
	require.NoError(t, err)
	whole := mappedRSS(t, path) - before
	t.Logf("whole model: %d KiB more resident", whole>>10)
	require.Greater(t, whole, 3*own)
}

// advisedHuge reports whether the mapping of this process that holds b's
// first byte is advised for huge pages (/proc/self/smaps VmFlags "hg").
func advisedHuge(t *testing.T, b []byte) bool {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	require.NoError(t, err)
	defer f.Close()
	addr := uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
	in, found := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			lo, hi, _ := strings.Cut(fields[0], "-")
			a, err1 := strconv.ParseUint(lo, 16, 64)
			z, err2 := strconv.ParseUint(hi, 16, 64)
			require.NoError(t, err1)
			require.NoError(t, err2)
			in = a <= addr && addr < z
			continue
		}
		if in && len(fields) > 0 && fields[0] == "VmFlags:" {
			found = true
			if slices.Contains(fields[1:], "hg") {
				return true
			}
		}
	}
	require.NoError(t, sc.Err())
	require.True(t, found, "no mapping with VmFlags holds %#x", addr)
	return false
}

// needAdvice skips a test of which mappings carry the huge-page advice
// where the kernel cannot record it (no transparent huge pages, or smaps
// without VmFlags).
func needAdvice(t *testing.T) {
	t.Helper()
	if why := hugepage.Unavailable(); why != "" {
		t.Skip(why)
	}
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil || !strings.Contains(string(b), "VmFlags:") {
		t.Skip("no VmFlags in /proc/self/smaps")
	}
}

// TestFileLayoutAdvisedHugePages: the weight matrices a forward pass
// streams from the file's mapping (left in the file's layout) are advised
// for huge pages, each its own bytes; the file range of a repacked matrix
// is not (its copy is on the arena's huge pages), nor is a token
// embedding that is only looked up (untied), nor a tensor's rows that a
// shard does not use.
func TestFileLayoutAdvisedHugePages(t *testing.T) {
	needAdvice(t)
	for _, c := range []struct {
		arch string
		typ  quant.Type
	}{{"llama", quant.F32}, {"llama", quant.Q8_0}, {"qwen2moe", quant.F16}} {
		t.Run(c.arch+"-"+c.typ.String(), func(t *testing.T) {
			cfg := synth.DefaultConfig()
			cfg.Arch, cfg.Type = c.arch, c.typ
			cfg.Dim, cfg.Layers, cfg.Heads, cfg.KVHeads, cfg.FF, cfg.Vocab = 256, 2, 4, 4, 1024, 4096
			if c.arch == "qwen2moe" {
				cfg.Experts, cfg.ExpertsUsed, cfg.ExpertFF, cfg.SharedFF = 4, 2, 256, 256
			}
			path := writeSynth(t, cfg)
			for _, noRepack := range []bool{false, true} {
				m, err := Load(path, Options{Threads: 1, ContextSize: 64, NoRepack: noRepack})
				require.NoError(t, err)
				wq := m.layers[0].wq
				ft, ok := m.file.Tensor("blk.0.attn_q.weight")
				require.True(t, ok)
				file, err := m.file.TensorData(ft)
				require.NoError(t, err)
				require.Equal(t, !wq.Repacked(), advisedHuge(t, file[len(file)/2:]),
					"a matrix in the file's layout is advised, a repacked one's file range not (repacked %v)", wq.Repacked())
				emb, ok := m.file.Tensor("token_embd.weight")
				require.True(t, ok)
				data, err := m.file.TensorData(emb)
				require.NoError(t, err)
				tied := m.output == m.embd
				require.Equal(t, c.arch != "qwen2moe", tied)
				require.Equal(t, tied && !m.output.Repacked(), advisedHuge(t, data[len(data)/2:]),
					"the embedding: advised only as a streamed output matrix (tied %v)", tied)
				require.NoError(t, m.Close())
			}
		})
	}

	// A tensor shard streams its own rows of wq: those are advised, not
	// the other shard's.
	cfg := synth.DefaultConfig()
	cfg.Type, cfg.Dim, cfg.Layers, cfg.Heads, cfg.KVHeads, cfg.FF, cfg.Vocab = quant.F32, 1024, 1, 2, 2, 1024, 512
	path := writeSynth(t, cfg)
	m, err := LoadShard(path, ShardSpec{Mode: Tensor, KVLo: 1, KVHi: 2, Peers: shortGatherer{}}, Options{Threads: 1, ContextSize: 64})
	require.NoError(t, err)
	defer m.Close()
	ft, ok := m.file.Tensor("blk.0.attn_q.weight")
	require.True(t, ok)
	file, err := m.file.TensorData(ft)
	require.NoError(t, err)
	require.False(t, m.layers[0].wq.Repacked())
	require.True(t, advisedHuge(t, m.layers[0].wq.Data), "the shard's rows")
	require.False(t, advisedHuge(t, file[:len(file)/4]), "the other shard's rows")
}

// TestRepackCacheAdvisedHugePages: the repack cache file is mapped advised
// for huge pages, by the load that writes it (before it repacks into it)
// and by a later load that maps it.
func TestRepackCacheAdvisedHugePages(t *testing.T) {
	needAdvice(t)
	cfg := synth.DefaultConfig()
	cfg.Dim, cfg.Layers, cfg.Heads, cfg.KVHeads, cfg.FF, cfg.Vocab, cfg.Type = 256, 2, 4, 4, 1024, 4096, quant.Q8_0
	path := writeSynth(t, cfg)
	dir := filepath.Join(t.TempDir(), "repack")
	for _, step := range []string{"writes the cache", "maps the cache"} {
		m, err := Load(path, Options{Threads: 1, ContextSize: 64, RepackCache: dir})
		require.NoError(t, err)
		if !m.layers[0].wUp.Repacked() {
			m.Close()
			t.Skip("no repacked kernel for Q8_0 on this CPU")
		}
		files, err := filepath.Glob(filepath.Join(dir, "*"+repackExt))
		require.NoError(t, err)
		require.Len(t, files, 1, step)
		require.Len(t, m.arena.maps, 1, "%s: one mapping, the cache file's", step)
		require.True(t, advisedHuge(t, m.arena.maps[0][len(m.arena.maps[0])/2:]), step)
		require.NoError(t, m.Close())
	}
}
