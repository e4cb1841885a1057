package engine

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestKVCacheTypes: a Model keeps its Sessions' KV caches in the type it
// was loaded with (halves by default, as llama.cpp), says so in Info, and
// refuses a type that does not exist; the flag values parse both ways.
func TestKVCacheTypes(t *testing.T) {
	for _, kv := range []KVType{KVF16, KVF32} {
		m, err := Load(storiesPath, Options{Threads: 1, ContextSize: 128, KVCache: kv})
		require.NoError(t, err)
		require.Equal(t, kv.String(), m.Info().KVCache)
		s := m.NewSession()
		_, err = s.eval(context.Background(), []int32{1, 2, 3})
		require.NoError(t, err)
		if kv == KVF16 {
			require.Nil(t, s.kc)
			require.Len(t, s.kc16, len(m.layers))
			require.NotEmpty(t, s.keys16(0, 0))
		} else {
			require.Nil(t, s.kc16)
			require.Len(t, s.kc, len(m.layers))
			require.NotEmpty(t, s.keys(0, 0))
		}
		m.Close()
	}
	var def Options
	require.Equal(t, KVF16, def.KVCache, "the zero value is f16")
	_, err := Load(storiesPath, Options{KVCache: KVF32 + 1})
	require.ErrorIs(t, err, ErrBadRequest)
	for _, s := range []string{"f16", "f32"} {
		var v KVType
		require.NoError(t, v.Set(s))
		require.Equal(t, s, v.String())
	}
	var v KVType
	require.ErrorIs(t, v.Set("q8_0"), ErrBadRequest)
}
