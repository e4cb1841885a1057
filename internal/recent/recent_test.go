package recent

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSet: a key is a member for its TTL after its last Add, and adding
// drops the expired ones (the map stays bounded).
func TestSet(t *testing.T) {
	clock := time.Unix(1000, 0)
	s := New[string](time.Minute)
	s.now = func() time.Time { return clock }
	require.False(t, s.Has("a"))
	s.Add("a")
	require.True(t, s.Has("a"))
	clock = clock.Add(59 * time.Second)
	s.Add("b")
	require.True(t, s.Has("a"))
	clock = clock.Add(2 * time.Second)
	require.False(t, s.Has("a"), "past its TTL")
	require.True(t, s.Has("b"))
	s.Add("c")
	require.Len(t, s.m, 2, "the expired key was dropped")
	s.Add("b") // again: its TTL starts over
	clock = clock.Add(59 * time.Second)
	require.True(t, s.Has("b"))
}
