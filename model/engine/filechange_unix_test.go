//go:build unix

package engine

import (
	"os"
	"runtime/debug"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

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

// TestFaultElsewhereIsNotAFileChange: a memory fault at an address outside
// the model's file mappings (a kernel bug reading past its slice into
// unmapped memory) goes on as the panic it is; only one inside a mapping
// of the model file becomes ErrFileChanged.
func TestFaultElsewhereIsNotAFileChange(t *testing.T) {
	page := os.Getpagesize()
	gone, err := unix.Mmap(-1, 0, page, unix.PROT_READ, unix.MAP_ANON|unix.MAP_PRIVATE)
	require.NoError(t, err)
	addr := unsafe.Pointer(unsafe.SliceData(gone))
	require.NoError(t, unix.Munmap(gone))

	read := func(holds func(uintptr) bool) (err error) {
		defer recoverFault(&err, holds)
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		_ = *(*byte)(addr)
		return nil
	}
	require.ErrorIs(t, read(func(uintptr) bool { return true }), ErrFileChanged)
	var r any
	func() {
		defer func() { r = recover() }()
		_ = read(func(uintptr) bool { return false })
	}()
	require.True(t, quant.IsFault(r), "the fault goes on: %v", r)
}
