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

// vocabDirs are the folders of test-tokenizer-0 vector sets: the
// repository's, and the one RBEE_TOKENIZER_VECTORS names, if any (e.g.
// llama.cpp's models/, to run all of its sets).
func vocabDirs() []string {
	dirs := []string{vocabDir}
	if d := os.Getenv("RBEE_TOKENIZER_VECTORS"); d != "" {
		dirs = append(dirs, d)
	}
	return dirs
}

// vocabPath is the vocab file of a vector set, from the first folder that has it.
func vocabPath(tb testing.TB, name string) string {
	for _, d := range vocabDirs() {
		p := filepath.Join(d, "ggml-vocab-"+name+".gguf")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	tb.Fatalf("no vocab %q in %v", name, vocabDirs())
	return ""
}

// loaded caches one Tokenizer per vocab file for the whole test binary
// (the qwen2 vocab takes a moment to load).
var loaded sync.Map

func loadVocab(tb testing.TB, name string) *Tokenizer {
	tb.Helper()
	path := vocabPath(tb, name)
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

// vocabNames lists the vector sets (a vocab with its .inp), each once.
func vocabNames(tb testing.TB) []string {
	var names []string
	seen := map[string]bool{}
	for _, d := range vocabDirs() {
		matches, err := filepath.Glob(filepath.Join(d, "ggml-vocab-*.gguf"))
		require.NoError(tb, err)
		for _, m := range matches {
			name := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(m), "ggml-vocab-"), ".gguf")
			if _, err := os.Stat(m + ".inp"); err != nil || seen[name] {
				continue
			}
			if fi, err := os.Stat(m); err != nil || fi.Size() == 0 {
				continue // a file left out of a checkout (Git LFS, size limits)
			}
			seen[name] = true
			names = append(names, name)
		}
	}
	return names
}

// exactFamily reports whether Decode(Encode(s)) == s holds for the
// vocabulary's family: not for WordPiece and unigram, whose normalizers
// lower, strip accents or replace characters.
func exactFamily(tok *Tokenizer) bool {
	return tok.kind != kindWPM && tok.kind != kindUGM
}

// TestVocabVectors runs every llama.cpp test-tokenizer-0 vector set in testdata/tokenizer.
func TestVocabVectors(t *testing.T) {
	names := vocabNames(t)
	require.GreaterOrEqual(t, len(names), 3, "expected the llama-spm, gpt-2 and qwen2 sets")
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			tok := loadVocab(t, name)
			tests, want := readVectors(t, vocabPath(t, name))
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
