//go:build unix

package engine

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/quant"
	"github.com/rbee-project/rbee/model/synth"
)

// TestTruncatedFileIsAnError: a model file truncated while the Model maps
// it (a user rewriting or shrinking it in place) made the next read of its
// weights a SIGBUS that killed the process (a worker, or rbee model run).
// Generation now ends with ErrFileChanged, and the Model still answers (with the same
// error) instead of deadlocking. (The pool's workers are
// model/quant's TestPoolFault.)
func TestTruncatedFileIsAnError(t *testing.T) {
	cases := []struct {
		name string
		typ  quant.Type
		opts Options
	}{
		{"one thread", quant.F32, Options{Threads: 1}},
		{"workers", quant.F32, Options{Threads: 3}},
		{"q8_0", quant.Q8_0, Options{Threads: 2, NoRepack: true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := synth.DefaultConfig()
			cfg.Type, cfg.Dim, cfg.FF, cfg.Vocab = c.typ, 256, 512, 1024
			path := writeSynth(t, cfg)
			m, err := Load(path, c.opts)
			require.NoError(t, err)
			defer m.Close()
			bos := []int32{m.Tokenizer().BOS()}
			gen := func() error {
				_, err := m.NewSession().Generate(t.Context(), GenerateRequest{Prompt: bos, MaxTokens: 4}, func(Token) error { return nil })
				return err
			}
			require.NoError(t, gen())
			require.NoError(t, os.Truncate(path, int64(m.File().DataOffset)))
			for range 2 {
				require.ErrorIs(t, gen(), ErrFileChanged)
			}
		})
	}
}
