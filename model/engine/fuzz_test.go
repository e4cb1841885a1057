package engine

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/quant"
	"github.com/rbee-project/rbee/model/synth"
)

// tinySynth returns the bytes of a very small synthetic model.
func tinySynth(tb testing.TB, arch string, typ quant.Type) []byte {
	tb.Helper()
	cfg := synth.DefaultConfig()
	cfg.Arch, cfg.Type = arch, typ
	// Small on purpose: the fuzzer mutates and minimises whole inputs.
	cfg.Dim, cfg.Layers, cfg.Heads, cfg.KVHeads, cfg.FF, cfg.Vocab, cfg.Ctx = 8, 1, 2, 1, 8, synth.MinVocab, 16
	w, err := synth.Build(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzNewModel: whatever a GGUF file holds, preparing it as a model and
// running a few tokens returns an error or works; it never panics.
// The committed corpus (testdata/fuzz/FuzzNewModel) holds tiny llama and
// qwen2 models.
func FuzzNewModel(f *testing.F) {
	f.Add(tinySynth(f, "llama", quant.F32))
	f.Add(tinySynth(f, "qwen2", quant.F16))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := gguf.Parse(data)
		if err != nil {
			return
		}
		m, err := newModel(file, "", Options{Threads: 1, ContextSize: 8}, ShardSpec{})
		if err != nil {
			return
		}
		defer m.Close()
		s := m.NewSession()
		_, _ = s.eval(t.Context(), []int32{0, 1, int32(m.hp.vocab - 1)})
		_, _ = m.ChatPrompt(t.Context(), []Message{{Role: "user", Content: "hi"}})
	})
}

// FuzzStopper: the emitted text plus what is held back always equals the
// input up to a stop string, and a reported stop string is in the input.
func FuzzStopper(f *testing.F) {
	f.Add("hello wor", "ld and more", "world")
	f.Add("ab", "c", "bcd")
	f.Add("\xe2\x82", "\xac!", "€")
	f.Add("<t>ab", "c</t>d", "c")
	f.Add("<i b", "c</t>d", "b")
	f.Fuzz(func(t *testing.T, a, b, stop string) {
		if stop == "" {
			return
		}
		st := stopper{stops: []string{stop}}
		if strings.HasPrefix(a, "<") {
			// A quiet span (a think block) where a stop does not match.
			st = newStopper([]string{stop}, &QuietSpan{Open: "<t>", Close: "</t>", Inside: strings.HasPrefix(a, "<i")})
		}
		var out string
		hit := false
		for _, p := range []string{a, b} {
			o, h := st.push(p)
			out += o
			if h {
				hit = true
				break
			}
		}
		in := a + b
		if hit && st.quiet == nil && !strings.HasPrefix(a, "<") {
			i := bytes.Index([]byte(in), []byte(stop))
			if i < 0 || out != in[:i] {
				t.Fatalf("stop %q in %q: emitted %q", stop, in, out)
			}
			return
		}
		if hit {
			if !strings.HasPrefix(in, out) || !strings.HasPrefix(in[len(out):], stop) {
				t.Fatalf("stop %q in %q: emitted %q", stop, in, out)
			}
			return
		}
		if out+st.held != in {
			t.Fatalf("no stop: emitted %q + held %q != %q", out, st.held, in)
		}
	})
}
