package cputime

import (
	"crypto/sha256"
	"errors"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// burn uses CPU until this process has used at least d more.
func burn(t *testing.T, read func() (time.Duration, error), d time.Duration) (before, after time.Duration) {
	t.Helper()
	before, err := read()
	require.NoError(t, err)
	buf := make([]byte, 1<<20)
	deadline := time.Now().Add(30 * time.Second)
	for after = before; after-before < d; {
		require.True(t, time.Now().Before(deadline), "no CPU time counted")
		for range 16 {
			sha256.Sum256(buf)
		}
		after, err = read()
		require.NoError(t, err)
	}
	return before, after
}

func TestSelfGrows(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no getrusage")
	}
	before, after := burn(t, Self, 20*time.Millisecond)
	require.Greater(t, after, before)
}

func TestProcessMatchesSelf(t *testing.T) {
	if _, err := Process(os.Getpid()); errors.Is(err, ErrUnsupported) {
		t.Skip("no /proc")
	}
	self := func() (time.Duration, error) { return Process(os.Getpid()) }
	before, after := burn(t, self, 50*time.Millisecond)
	require.GreaterOrEqual(t, after-before, 50*time.Millisecond)
	// /proc and getrusage count the same time, at 10 ms vs 1 µs resolution.
	p, err := Process(os.Getpid())
	require.NoError(t, err)
	s, err := Self()
	require.NoError(t, err)
	require.InDelta(t, s.Seconds(), p.Seconds(), 0.1)
}

func TestProcessMissing(t *testing.T) {
	_, err := Process(-1)
	require.Error(t, err)
}
