package tokenizer

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/rbee-project/rbee/model/gguf"
	"github.com/stretchr/testify/require"
)

const vocabDir = "../../testdata/tokenizer"

// loaded caches one Tokenizer per vocab file for the whole test binary
// (the qwen2 vocab takes a moment to load).
var loaded sync.Map

func loadVocab(tb testing.TB, name string) *Tokenizer {
	tb.Helper()
	path := filepath.Join(vocabDir, "ggml-vocab-"+name+".gguf")
	if v, ok := loaded.Load(path); ok {
		return v.(*Tokenizer)
	}
	f, err := gguf.Open(path)
	require.NoError(tb, err)
	defer f.Close()
	tok, err := FromGGUF(f)
	require.NoError(tb, err)
	loaded.Store(path, tok)
	return tok
}

// readVectors parses a .inp/.out pair as FORMAT.md describes.
func readVectors(tb testing.TB, gguf string) ([]string, [][]int32) {
	tb.Helper()
	inp, err := os.ReadFile(gguf + ".inp")
	require.NoError(tb, err)
	outp, err := os.ReadFile(gguf + ".out")
	require.NoError(tb, err)
	const sep = "\n__ggml_vocab_test__\n"
	tests := strings.Split(string(inp), sep)
	if tests[len(tests)-1] == "" {
		tests = tests[:len(tests)-1]
	}
	lines := strings.Split(strings.TrimSuffix(string(outp), "\n"), "\n")
	require.Len(tb, lines, len(tests), "different number of tests")
	want := make([][]int32, len(lines))
	for i, l := range lines {
		for _, f := range strings.Fields(l) {
			v, err := strconv.Atoi(f)
			require.NoError(tb, err)
			want[i] = append(want[i], int32(v))
		}
	}
	return tests, want
}

func vocabNames(tb testing.TB) []string {
	matches, err := filepath.Glob(filepath.Join(vocabDir, "ggml-vocab-*.gguf"))
	require.NoError(tb, err)
	var names []string
	for _, m := range matches {
		if _, err := os.Stat(m + ".inp"); err != nil {
			continue
		}
		names = append(names, strings.TrimSuffix(strings.TrimPrefix(filepath.Base(m), "ggml-vocab-"), ".gguf"))
	}
	return names
}

// TestVocabVectors runs every llama.cpp test-tokenizer-0 vector set in testdata/tokenizer.
func TestVocabVectors(t *testing.T) {
	names := vocabNames(t)
	require.GreaterOrEqual(t, len(names), 3, "expected the llama-spm, gpt-2 and qwen2 sets")
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			tok := loadVocab(t, name)
			tests, want := readVectors(t, filepath.Join(vocabDir, "ggml-vocab-"+name+".gguf"))
			for i, text := range tests {
				got := tok.Encode(text, false, false)
				if len(want[i]) == 0 {
					require.Empty(t, got, "test %d %q", i, text)
					continue
				}
				require.Equal(t, want[i], got, "test %d %q", i, text)
			}
		})
	}
}
