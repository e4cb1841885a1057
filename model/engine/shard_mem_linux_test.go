package engine

import (
	"bufio"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

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
