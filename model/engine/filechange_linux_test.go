//go:build linux

package engine

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/quant"
	"github.com/rbee-project/rbee/model/synth"
)

// TestFileChangedInPlace: a model file or repack cache file written or
// truncated in place while two Models (two workers) map it made them
// serve other tokens with no error where no read faulted: a truncation
// inside the model file's last page (the rest of it reads as zeros, here
// the looked-up embedding rows), or new bytes of the same size. Each
// Model now answers ErrFileChanged, again on the next request; a rename
// over the file's name or its deletion leaves both serving the tokens
// they served. The model (9 MiB, Q4_0 repacked into the cache) is large
// enough for its mappings to be on huge pages where the kernel gives
// them (internal/hugepage).
func TestFileChangedInPlace(t *testing.T) {
	// A time long before the test: a write during it changes the files'
	// modification time whatever the clock's granularity.
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	rewrite := func(p string, off int64) error {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.WriteAt(make([]byte, 64<<10), off)
		return err
	}
	cases := []struct {
		name    string
		change  func(t *testing.T, model, cache string, dataOff int64) error
		changed bool
	}{
		{"model truncated in its last page", func(_ *testing.T, p, _ string, off int64) error { return os.Truncate(p, off) }, true},
		{"model rewritten in place", func(_ *testing.T, p, _ string, off int64) error { return rewrite(p, off) }, true},
		{"model renamed over", func(t *testing.T, p, _ string, _ int64) error {
			other := synth.DefaultConfig()
			q := filepath.Join(filepath.Dir(p), "other.gguf")
			require.NoError(t, synth.Write(q, other))
			return os.Rename(q, p)
		}, false},
		{"model deleted", func(_ *testing.T, p, _ string, _ int64) error { return os.Remove(p) }, false},
		// Inside its last page: no read faults, only the check sees it.
		{"cache truncated", func(_ *testing.T, _, c string, _ int64) error {
			fi, err := os.Stat(c)
			if err != nil {
				return err
			}
			return os.Truncate(c, fi.Size()-1)
		}, true},
		{"cache rewritten in place", func(_ *testing.T, _, c string, _ int64) error { return rewrite(c, repackHeader) }, true},
		{"cache deleted", func(_ *testing.T, _, c string, _ int64) error { return os.Remove(c) }, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := synth.DefaultConfig()
			cfg.Type, cfg.Dim, cfg.FF, cfg.Heads, cfg.KVHeads, cfg.Layers, cfg.Vocab = quant.Q4_0, 512, 1536, 8, 4, 6, 1024
			path := writeSynth(t, cfg)
			require.NoError(t, os.Chtimes(path, old, old))
			dir := filepath.Join(t.TempDir(), "repack")
			load := func() *Model {
				m, err := Load(path, Options{Threads: 2, ContextSize: 64, RepackCache: dir})
				require.NoError(t, err)
				t.Cleanup(func() { m.Close() })
				return m
			}
			gen := func(m *Model) ([]int32, error) {
				var out []int32
				_, err := m.NewSession().Generate(t.Context(), GenerateRequest{Prompt: []int32{m.Tokenizer().BOS()}, MaxTokens: 4}, func(tk Token) error {
					out = append(out, tk.ID)
					return nil
				})
				return out, err
			}
			writer := load() // writes the cache file
			if !writer.layers[0].wq.Repacked() {
				t.Skip("no repacked kernel on this CPU")
			}
			want, err := gen(writer)
			require.NoError(t, err)
			require.NotEmpty(t, want)
			writer.Close()
			files := repackFiles(t, dir)
			require.Len(t, files, 1)
			require.NoError(t, os.Chtimes(files[0], old, old))
			models := []*Model{load(), load()} // both map it
			for _, m := range models {
				got, err := gen(m)
				require.NoError(t, err)
				require.Equal(t, want, got)
			}
			require.NoError(t, c.change(t, path, files[0], int64(models[0].File().DataOffset)))
			for _, m := range models {
				for range 2 {
					got, err := gen(m)
					if c.changed {
						require.ErrorIs(t, err, ErrFileChanged, "served %v (before %v)", got, want)
					} else {
						require.NoError(t, err)
						require.Equal(t, want, got)
					}
				}
			}
		})
	}
}
