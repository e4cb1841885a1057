package membw

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestNewRefusesBadConfig(t *testing.T) {
	for _, c := range []struct{ threads, bytes int }{{0, minBytes}, {-1, minBytes}, {1, minBytes - 1}, {1, 0}} {
		_, err := New(c.threads, c.bytes)
		require.ErrorIs(t, err, ErrBadConfig, "threads %d bytes %d", c.threads, c.bytes)
	}
}

func TestMeasure(t *testing.T) {
	p, err := New(2, minBytes)
	require.NoError(t, err)
	for _, threads := range []int{1, 2} {
		r, err := p.Measure(context.Background(), threads, 20*time.Millisecond)
		require.NoError(t, err)
		require.Equal(t, threads, r.Threads)
		// Whole passes over every thread's buffer (1 MiB each), at least
		// one each, at a rate below anything a memory bus does (1 TB/s).
		require.GreaterOrEqual(t, r.Bytes, int64(threads*minBytes))
		require.Zero(t, r.Bytes%minBytes, "whole buffers read")
		require.Greater(t, r.BytesPerSecond, 0.0)
		require.Less(t, r.BytesPerSecond, 1e12)
	}
	// However short the time, each thread reads its buffer once: the
	// count is exact.
	r, err := p.Measure(context.Background(), 2, 0)
	require.NoError(t, err)
	require.EqualValues(t, 2*minBytes, r.Bytes)
	_, err = p.Measure(context.Background(), 3, time.Millisecond)
	require.ErrorIs(t, err, ErrBadConfig, "more threads than buffers")
	_, err = p.Measure(context.Background(), 0, time.Millisecond)
	require.ErrorIs(t, err, ErrBadConfig)
}

func TestScale(t *testing.T) {
	p, err := New(2, minBytes)
	require.NoError(t, err)
	s, err := p.Scale(context.Background(), 1, 2, 20*time.Millisecond)
	require.NoError(t, err)
	require.Equal(t, 1, s.From.Threads)
	require.Equal(t, 2, s.To.Threads)
	require.InDelta(t, s.To.BytesPerSecond/s.From.BytesPerSecond, s.Ratio, 1e-9)
	_, err = p.Scale(context.Background(), 1, 3, time.Millisecond)
	require.ErrorIs(t, err, ErrBadConfig)
}

func TestMeasureStopsWithContext(t *testing.T) {
	p, err := New(1, minBytes)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = p.Measure(ctx, 1, time.Hour) // one pass, then it sees ctx
	require.ErrorIs(t, err, context.Canceled)
}

func TestXorAll(t *testing.T) {
	b := []uint64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768}
	require.Equal(t, uint64(65535), xorAll(b))
	require.Equal(t, uint64(255), xorAll(b[:8]))
	require.Equal(t, uint64(0), xorAll(b[:7]), "a tail shorter than eight words is not read")
}
