package tokenizer

import (
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// splitWords runs splitters over text and returns the pieces as strings.
func splitWords(t testing.TB, sp []splitter, text string) []string {
	t.Helper()
	rt := reText{cpts: []rune(text)}
	for _, r := range rt.cpts {
		rt.flags = append(rt.flags, flagsOf(r))
	}
	offs := []int{len(rt.cpts)}
	for _, s := range sp {
		offs = s.split(&rt, offs, nil)
	}
	var words []string
	start := 0
	for _, n := range offs {
		require.Positive(t, n)
		words = append(words, string(rt.cpts[start:start+n]))
		start += n
	}
	require.Equal(t, len(rt.cpts), start, "pieces must cover the text")
	return words
}

func TestSplitExamples(t *testing.T) {
	tests := []struct {
		pre  string
		text string
		want []string
	}{
		{"gpt-2", "Hello world", []string{"Hello", " world"}},
		{"gpt-2", "I'm   here\n", []string{"I", "'m", "  ", " here", "\n"}},
		{"gpt-2", "ied 4 ½ months", []string{"ied", " 4", " ½", " months"}},
		{"gpt-2", "3333", []string{"3333"}},
		{"llama-bpe", "3333 I'M", []string{"333", "3", " I", "'M"}},
		{"llama-bpe", "a  \n\n b", []string{"a", "  \n\n", " b"}},
		{"qwen2", "1314151天～", []string{"1", "3", "1", "4", "1", "5", "1", "天", "～"}},
		{"starcoder", "x 123", []string{"x", " ", "1", "2", "3"}},
		{"deepseek-coder", "foo(bar)\n12", []string{"foo", "(", "bar", ")", "\n", "1", "2"}},
		{"falcon", "a+=1234", []string{"a", "+=", "123", "4"}},
		{"default", "hello, 12345", []string{"hello", ",", " ", "123", "45"}},
		{"gpt-4o", "HelloWorld's 12345", []string{"Hello", "World's", " ", "123", "45"}},
		{"superbpe", "x1234567", []string{"x", "1", "234", "567"}},
	}
	for _, tc := range tests {
		t.Run(tc.pre+"/"+tc.text, func(t *testing.T) {
			pt, ok := preTokenizerFor(tc.pre)
			require.True(t, ok)
			sp, err := compileSplitters(pt.exprs)
			require.NoError(t, err)
			require.Equal(t, tc.want, splitWords(t, sp, tc.text))
		})
	}
}

// TestAllPreTokenizersCompile checks that every expression in the table parses.
func TestAllPreTokenizersCompile(t *testing.T) {
	for _, pre := range []string{"default", "llama3", "dbrx", "glm4", "deepseek-llm", "deepseek-coder",
		"deepseek-v3", "falcon", "starcoder", "gpt-2", "qwen2", "qwen35", "bloom", "viking", "tekken",
		"chameleon", "gpt-4o", "superbpe", "bailingmoe", "seed-coder"} {
		pt, ok := preTokenizerFor(pre)
		require.True(t, ok, pre)
		for _, e := range pt.exprs {
			_, err := compileRegex(e)
			require.NoError(t, err, "%s: %s", pre, e)
		}
	}
	_, ok := preTokenizerFor("no-such-pre")
	require.False(t, ok)
}

func TestRegexErrors(t *testing.T) {
	for _, e := range []string{`(`, `[a-`, `a{2,1}`, `\p{Xx}`, `a*?`, `\q`, `)`, `(?<x>a)`, "\xff"} {
		_, err := compileRegex(e)
		require.ErrorIs(t, err, errRegex, e)
	}
}

// crossCheckAlphabet mixes the character classes the split expressions care about.
var crossCheckAlphabet = []rune("aZé ß  \t\n\r\u00a0\u3000'sStTmMdDlLrReEvV0129½٣.,!?-_/$+<=>^~|`天ひ가😁\u0301\u200d\x00\x1f\ufffd")

func randomText(rng *rand.Rand, n int) string {
	var b strings.Builder
	for range n {
		b.WriteRune(crossCheckAlphabet[rng.IntN(len(crossCheckAlphabet))])
	}
	return b.String()
}

// TestCustomSplittersMatchRegex checks the hand-written splitters against the
// generic backtracking engine running the same expressions.
func TestCustomSplittersMatchRegex(t *testing.T) {
	inputs, _ := readVectors(t, filepath.Join(vocabDir, "ggml-vocab-gpt-2.gguf"))
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		inputs = append(inputs, randomText(rng, rng.IntN(24)))
	}
	for _, expr := range []string{reGPT2, reLlama3, reLlama3Orig, reQwen2, reQwen2Orig} {
		custom, err := compileSplitter(expr)
		require.NoError(t, err)
		re, err := compileRegex(expr)
		require.NoError(t, err)
		generic := &regexSplitter{re: re}
		for _, in := range inputs {
			// Two stages, so fragment boundaries are exercised too.
			pre := &regexSplitter{re: mustRegex(t, `\p{N}`)}
			require.Equal(t, splitWords(t, []splitter{generic}, in), splitWords(t, []splitter{custom}, in), "expr %s input %q", expr, in)
			require.Equal(t, splitWords(t, []splitter{pre, generic}, in), splitWords(t, []splitter{pre, custom}, in), "expr %s input %q", expr, in)
		}
	}
}

func mustRegex(t testing.TB, e string) reNode {
	re, err := compileRegex(e)
	require.NoError(t, err)
	return re
}

func FuzzSplit(f *testing.F) {
	for _, s := range []string{"Hello world", "  \n\n x", "I'M 12345 ½", "😁 !!", "\u00a0\u00a0a"} {
		f.Add(s)
	}
	engines := map[string][2]splitter{}
	for _, expr := range []string{reGPT2, reLlama3, reQwen2} {
		c, _ := compileSplitter(expr)
		re, _ := compileRegex(expr)
		engines[expr] = [2]splitter{c, &regexSplitter{re: re}}
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 256 {
			return
		}
		for expr, e := range engines {
			a := splitWords(t, []splitter{e[0]}, s)
			b := splitWords(t, []splitter{e[1]}, s)
			if strings.Join(a, "\x00") != strings.Join(b, "\x00") {
				t.Fatalf("%s: custom %q != regex %q", expr, a, b)
			}
		}
	})
}

// TestLongRuns feeds long runs of one character class through the
// lookahead-heavy expressions; repetitions must not recurse per character.
func TestLongRuns(t *testing.T) {
	inputs := []string{
		strings.Repeat("aB", 20_000),
		strings.Repeat("É", 20_000),
		strings.Repeat("7", 3_000), // superbpe's digit lookahead is quadratic, in every regex engine
		strings.Repeat(" ", 20_000) + "x",
		strings.Repeat("!?", 10_000),
	}
	for _, pre := range []string{"gpt-4o", "tekken", "superbpe", "deepseek-v3", "default"} {
		pt, _ := preTokenizerFor(pre)
		sp, err := compileSplitters(pt.exprs)
		require.NoError(t, err)
		for _, in := range inputs {
			words := splitWords(t, sp, in)
			require.Equal(t, in, strings.Join(words, ""), pre)
		}
	}
	pt, _ := preTokenizerFor("gpt-4o")
	sp, _ := compileSplitters(pt.exprs)
	require.Equal(t, []string{"HELLOWorld", " ÉCOLEécole"}, splitWords(t, sp, "HELLOWorld ÉCOLEécole"))
}
