package tokenizer

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/rbee-project/rbee/model/gguf"
)

// FuzzEncode checks that encoding never panics and that for valid UTF-8
// Decode(Encode(s)) == s, for SentencePiece with byte fallback (llama-spm)
// and byte-level BPE (gpt-2, qwen2).
func FuzzEncode(f *testing.F) {
	for _, s := range []string{"", " ", "Hello world", "\n\n\t x", "ied 4 ½ months", "🦙.cpp", "Cửa Việt",
		"<s>x</s>", "<|im_start|>a<|im_end|>", "\xff\xfe", "I'm 12345 !!!", "нещо на Български"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	toks := map[string]*Tokenizer{}
	for _, name := range []string{"llama-spm", "gpt-2", "qwen2"} {
		toks[name] = loadVocab(f, name)
	}
	f.Fuzz(func(t *testing.T, s string, special bool) {
		if len(s) > 1<<12 {
			return
		}
		for name, tok := range toks {
			ids := tok.Encode(s, special, special)
			for _, id := range ids {
				if id < 0 || int(id) >= tok.VocabSize() {
					t.Fatalf("%s: id %d out of range", name, id)
				}
			}
			d := tok.NewStreamDecoder()
			var b strings.Builder
			for _, id := range ids {
				chunk := d.Next(id)
				if !utf8.ValidString(chunk) {
					t.Fatalf("%s: stream chunk %q is not valid UTF-8", name, chunk)
				}
				b.WriteString(chunk)
			}
			if rest := d.Flush(); !utf8.ValidString(rest) {
				t.Fatalf("%s: flush %q is not valid UTF-8", name, rest)
			}
			if special || !utf8.ValidString(s) {
				continue
			}
			// SentencePiece spells spaces as U+2581, so that character cannot round-trip.
			if tok.kind == kindSPM && strings.ContainsRune(s, '▁') {
				continue
			}
			if got := tok.Decode(ids); got != s {
				t.Fatalf("%s: Decode(Encode(%q)) = %q (ids %v)", name, s, got, ids)
			}
		}
	})
}

// benchText is a few KB of mixed prose, code, numbers and non-Latin text.
func benchText() string {
	const para = "The quick brown fox jumps over the lazy dog. It's 2024-06-01, and we've got 1,234,567 tokens! " +
		"func main() { fmt.Println(\"héllo, wörld\") }\n\t// 测试中文分词 и немного кириллицы; emoji 🦙🚀 done.\n\n"
	return strings.Repeat(para, 20)
}

func BenchmarkEncode(b *testing.B) {
	text := benchText()
	for _, name := range []string{"llama-spm", "gpt-2", "qwen2"} {
		tok := loadVocab(b, name)
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			b.ReportAllocs()
			for b.Loop() {
				tok.Encode(text, true, true)
			}
		})
	}
}

func BenchmarkSplitRegexEngine(b *testing.B) {
	text := benchText()
	rt := reText{cpts: []rune(text)}
	for _, r := range rt.cpts {
		rt.flags = append(rt.flags, flagsOf(r))
	}
	re, err := compileRegex(reQwen2)
	if err != nil {
		b.Fatal(err)
	}
	sp := &regexSplitter{re: re}
	b.SetBytes(int64(len(text)))
	var out []int
	for b.Loop() {
		out = sp.split(&rt, []int{len(rt.cpts)}, out[:0])
	}
}

// FuzzFromGGUF builds vocabularies from arbitrary token, merge and type
// lists (written with gguf.Writer, read back with gguf.Parse) and checks
// that loading either fails with an error or yields a tokenizer whose
// Encode/Decode/StreamDecoder never panic and only return in-range ids.
func FuzzFromGGUF(f *testing.F) {
	f.Add("a\x00b\x00ab\x00<s>", "a b", []byte{1, 1, 1, 3}, "gpt-2", true, "abab <s>a")
	f.Add("▁\x00a\x00▁a\x00<0x41>", "", []byte{1, 1, 1, 6}, "", false, "a aA")
	f.Add("x\x00y", "x y\x00 \x00x  y", []byte{9, 0}, "qwen2", true, "xyxy")
	f.Add("h\x00i\x00hi", "h i", []byte{}, "gpt-4o", true, "Hi hi HI")
	f.Fuzz(func(t *testing.T, tokens, merges string, types []byte, pre string, bpe bool, text string) {
		if len(tokens) > 1<<12 || len(merges) > 1<<12 || len(text) > 1<<10 {
			return
		}
		w := gguf.NewWriter()
		model := "llama"
		if bpe {
			model = "gpt2"
		}
		toks := strings.Split(tokens, "\x00")
		kv := map[string]any{
			"tokenizer.ggml.model":  model,
			"tokenizer.ggml.tokens": toks,
			"tokenizer.ggml.merges": strings.Split(merges, "\x00"),
			"tokenizer.ggml.pre":    pre,
		}
		if len(types) > 0 {
			tt := make([]int32, len(types))
			for i, b := range types {
				tt[i] = int32(b % 8)
			}
			kv["tokenizer.ggml.token_type"] = tt
			kv["tokenizer.ggml.scores"] = make([]float32, len(types))
		}
		for k, v := range kv {
			if err := w.AddKV(k, v); err != nil {
				t.Fatal(err)
			}
		}
		var buf bytes.Buffer
		if _, err := w.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		file, err := gguf.Parse(buf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		tok, err := FromGGUF(file)
		if err != nil {
			return
		}
		for _, special := range []bool{false, true} {
			ids := tok.Encode(text, special, special)
			d := tok.NewStreamDecoder()
			for _, id := range ids {
				if id < 0 || int(id) >= tok.VocabSize() {
					t.Fatalf("id %d out of range", id)
				}
				if s := d.Next(id); !utf8.ValidString(s) {
					t.Fatalf("invalid UTF-8 from stream: %q", s)
				}
			}
			d.Flush()
			tok.Decode(ids)
		}
	})
}

func BenchmarkFromGGUF(b *testing.B) {
	for _, name := range []string{"llama-spm", "qwen2"} {
		b.Run(name, func(b *testing.B) {
			f, err := gguf.Open(filepath.Join(vocabDir, "ggml-vocab-"+name+".gguf"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			for b.Loop() {
				if _, err := FromGGUF(f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
