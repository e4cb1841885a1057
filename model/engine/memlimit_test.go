package engine

import (
	"errors"
	"testing"
)

// A model whose shape asks for more than Options.MemoryLimit at the
// requested context is refused at Load, before anything is allocated for
// it; within the limit it loads.
func TestMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  Options
		fails bool
	}{
		{"no limit", Options{ContextSize: 256}, false},
		{"within", Options{ContextSize: 256, MemoryLimit: 1 << 30}, false},
		{"context too large for the limit", Options{ContextSize: 1 << 20, MemoryLimit: 64 << 20}, true},
		// stories260K: 5 layers of 4 KV heads of 8: 84 MB of f16 cache
		// at 131072 positions, 168 MB of f32.
		{"f32 cache counts double", Options{ContextSize: 1 << 17, MemoryLimit: 120 << 20, KVCache: KVF32}, true},
		{"f16 cache at the same context", Options{ContextSize: 1 << 17, MemoryLimit: 120 << 20}, false},
		// Every session's cache counts: two of 84 MB are over 120 MB.
		{"two sessions' caches", Options{ContextSize: 1 << 17, MemoryLimit: 120 << 20, Sessions: 2}, true},
		{"one session named", Options{ContextSize: 1 << 17, MemoryLimit: 120 << 20, Sessions: 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Load(storiesPath, tc.opts)
			if tc.fails {
				if !errors.Is(err, ErrBadRequest) {
					t.Fatalf("Load: %v, want ErrBadRequest", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m.Close()
		})
	}
}

// The estimate cannot overflow, whatever a header says.
func TestMemoryNeedHostileHeader(t *testing.T) {
	hp := hparams{dim: 1 << 30, nLayer: 1 << 30, nHead: 1 << 30, nHeadKV: 1 << 30, headDim: 1 << 32, ff: 1 << 30, nCtx: 1 << 20}
	if need := hp.memoryNeed(KVF16, 0, hp.nLayer, hp.nHead, hp.nHeadKV, 1<<30, 1<<20); !(need > 1e30) {
		t.Fatalf("need %v for an absurd header", need)
	}
}

// A shard is held to what it holds: its layers' cache, not the model's.
func TestMemoryLimitShard(t *testing.T) {
	// stories260K's 5 layers at 131072 positions: 84 MB of f16 cache;
	// layers [2, 5): 50 MB.
	opts := Options{ContextSize: 1 << 17, MemoryLimit: 70 << 20}
	if _, err := Load(storiesPath, opts); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("whole model: %v, want ErrBadRequest", err)
	}
	m, err := LoadShard(storiesPath, ShardSpec{Lo: 2, Hi: 5}, opts)
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
}
