package servebench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRun builds the worker, benchmarks it on the test model at two
// levels and checks the report: every request answered, tokens counted,
// TTFTs measured for both second turns of the prefix-reuse measurement
// (their speed is the benchmark's to report, not a test's to assert).
func TestRun(t *testing.T) {
	bin := buildWorker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := Run(ctx, Config{
		Binary: bin, Model: "../../testdata/model/stories260K.gguf",
		Concurrency: []int{1, 3}, Threads: 1, MaxTokens: 8, RequestsPerClient: 1, Rounds: 2, ReuseWords: 150, Memory: true,
		KVCache: "f32", // passed to both workers; the first says in /v1/info what it runs
	})
	require.NoError(t, err)
	require.Equal(t, "f32", res.KVCache)
	require.Equal(t, 3, res.Slots)
	require.Len(t, res.Levels, 2)
	for i, lv := range res.Levels {
		require.Zero(t, lv.Errors, lv.FirstError)
		require.Equal(t, lv.Concurrency*2, lv.Requests, "one request per client and round")
		require.Len(t, lv.Rounds, 2)
		require.Positive(t, lv.GenTokens)
		require.Positive(t, lv.TokensPerSecond)
		require.Positive(t, lv.TTFTMedianMs)
		require.GreaterOrEqual(t, lv.TTFTP95Ms, lv.TTFTMedianMs)
		require.Positive(t, lv.PromptTokens)
		// The worker's own count of generations per forward pass: one
		// alone, at most the concurrency.
		require.GreaterOrEqual(t, lv.MeanBatch, 1.0)
		require.LessOrEqual(t, lv.MeanBatch, float64(lv.Concurrency))
		if i == 0 {
			require.Equal(t, 1.0, lv.RatioToFirst)
			require.Equal(t, 1.0, lv.MeanBatch)
		}
	}
	r := res.PrefixReuse
	require.NotNil(t, r)
	require.Greater(t, r.SecondTurnPromptTokens, r.FirstTurnPromptTokens)
	require.Positive(t, r.ReusedTTFTMedianMs)
	require.Positive(t, r.ColdTTFTMedianMs)
	// The reused turns were served from the cache (most of the first
	// turn), the cold ones not.
	require.GreaterOrEqual(t, r.ReusedCachedTokensMin, r.FirstTurnPromptTokens/2)
	require.Less(t, r.ColdCachedTokensMax, r.ReusedCachedTokensMin)
	if m := res.Memory; m != nil { // Linux
		require.Len(t, m.Workers, 2)
		for _, w := range m.Workers {
			require.Positive(t, w.RSS)
			require.LessOrEqual(t, w.PSS, w.RSS)
			require.LessOrEqual(t, w.ModelSharedClean, w.SharedClean)
		}
		// The weights were read by both from one mapping of the file:
		// most of the file is in both processes' shared pages, and no
		// more than the model (the executable's shared pages, larger
		// than this model, are not the model's).
		require.Greater(t, m.SharedFraction, 0.5, "%+v", m)
		// (Whole pages: the file's last one counts in full.)
		pages := (m.ModelBytes + int64(os.Getpagesize()) - 1) / int64(os.Getpagesize())
		require.LessOrEqual(t, m.SharedFraction, float64(pages*int64(os.Getpagesize()))/float64(m.ModelBytes), "%+v", m)
	}

	_, err = Run(ctx, Config{Binary: bin, Model: "x.gguf"})
	require.ErrorIs(t, err, ErrBadConfig)
}

// buildWorker builds rbee-worker into a temporary directory; the test is
// skipped under -short (it builds a binary and runs a worker process).
func buildWorker(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a binary and runs a worker process")
	}
	bin := filepath.Join(t.TempDir(), "rbee-worker")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/rbee-worker")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// TestRunFailsWithoutAnswers: a level whose every request the worker
// refuses (max_tokens beyond its context) ends the run with the worker's
// reason, not with a report of zeros.
func TestRunFailsWithoutAnswers(t *testing.T) {
	bin := buildWorker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := Run(ctx, Config{
		Binary: bin, Model: "../../testdata/model/stories260K.gguf",
		Concurrency: []int{2}, Threads: 1, MaxTokens: 1 << 20, RequestsPerClient: 1, ReuseWords: -1,
	})
	require.ErrorIs(t, err, ErrNoAnswers)
	require.ErrorContains(t, err, "max_tokens")
}

func TestMedianAndQuantile(t *testing.T) {
	cases := []struct {
		in   []float64
		want float64
	}{
		{nil, 0}, {[]float64{3}, 3}, {[]float64{4, 1}, 2.5}, {[]float64{5, 1, 3}, 3},
	}
	for _, c := range cases {
		require.Equal(t, c.want, median(c.in), "%v", c.in)
	}
	ds := []time.Duration{4 * time.Millisecond, time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond}
	require.Equal(t, 3.0, QuantileMs(ds, 0.5))
	require.Equal(t, 4.0, QuantileMs(ds, 0.95))
	require.Zero(t, QuantileMs(nil, 0.5))
}
