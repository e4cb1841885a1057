package engine

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// fixtureRun is one recorded llama.cpp run (testdata/**/expected/*.json).
type fixtureRun struct {
	Prompt           string      `json:"prompt"`
	KVCacheType      string      `json:"kv_cache_type"`
	PromptIDs        []int32     `json:"prompt_ids"`
	GeneratedIDs     []int32     `json:"generated_ids"`
	GeneratedText    string      `json:"generated_text"`
	GeneratedTextHex string      `json:"generated_text_hex"`
	StablePrefix     *int        `json:"stable_prefix_tokens"`
	Logits           [][]float32 `json:"logits"`
	Top5IDs          [][]int32   `json:"top5_ids"`
}

type fixtureFile struct {
	ModelFile string       `json:"model_file"`
	Runs      []fixtureRun `json:"runs"`
}

// fixtureCase says where a fixture lives and how closely this engine must
// follow it. Tolerances come from the fixture notes (testdata/**/NOTES.md,
// PROVENANCE.md) and from what this engine measured: like ggml it
// quantises activations for quantised weights, and each run is compared
// with the engine keeping its KV cache in the run's type (KVF32 for
// "f32" runs, KVF16 for "f16" runs, with ggml's f16 rounding of queries
// and attention weights). Measured maximum |logit diff| against the f16
// runs: stories260K 2.5e-4, its Q8_0 and Q4_0 quantisations 0 (bit for
// bit, with the repacked kernels on AVX-512 VNNI), kquant-F32 4e-5,
// qwen2 2e-7.
type fixtureCase struct {
	json    string
	dir     string  // model directory, relative to the JSON's directory
	tolF32  float64 // max |logit diff| against kv_cache_type "f32" runs
	tolF16  float64 // … against "f16" runs
	exactly bool    // tokens must match over the whole run (not just the stable prefix)
	top5    bool    // quantised weights: teacher-forced argmax must be in llama.cpp's top 5
}

func fixtureCases() []fixtureCase {
	return []fixtureCase{
		{json: "../../testdata/model/expected/stories260K.llamacpp.json", dir: "..", tolF32: 1e-4, tolF16: 1e-3, exactly: true},
		// F16 activations round to 11 bits, so one flipped rounding moves
		// logits by ~1e-2 (measured up to 1.1e-2 vs f32 KV, 1.25e-2 vs f16 KV).
		{json: "../../testdata/gguf/stories260K-quant/expected/stories260K-F16.llamacpp.json", dir: "..", tolF32: 1.5e-2, tolF16: 2e-2},
		// Notes: ≤ 0.23 for an f32 engine (other CPUs run other kernel orders).
		{json: "../../testdata/gguf/stories260K-quant/expected/stories260K-Q8_0.llamacpp.json", dir: "..", tolF32: 0.23, tolF16: 0.23},
		{json: "../../testdata/gguf/stories260K-quant/expected/stories260K-Q4_0.llamacpp.json", dir: "..", tolF32: 0.23, tolF16: 0.23},
		{json: "../../testdata/gguf/kquant/expected/kquant-F32.llamacpp.json", dir: "..", tolF32: 1e-4, tolF16: 1e-4},
		{json: "../../testdata/gguf/kquant/expected/kquant-Q4_K.llamacpp.json", dir: "..", tolF32: 0.05, tolF16: 0.05, top5: true},
		{json: "../../testdata/gguf/kquant/expected/kquant-Q6_K.llamacpp.json", dir: "..", tolF32: 0.05, tolF16: 0.05, top5: true},
		{json: "../../testdata/gguf/qwen2/expected/qwen2-random-F32.llamacpp.json", dir: "..", tolF32: 1e-4, tolF16: 1e-4, exactly: true},
		{json: "../../testdata/gguf/llama-2-tiny-random.llamacpp.json", dir: ".", exactly: true},
	}
}

func loadFixture(t *testing.T, c fixtureCase) (fixtureFile, string) {
	t.Helper()
	raw, err := os.ReadFile(c.json)
	require.NoError(t, err)
	var ff fixtureFile
	require.NoError(t, json.Unmarshal(raw, &ff))
	require.NotEmpty(t, ff.Runs)
	return ff, filepath.Join(filepath.Dir(c.json), c.dir, ff.ModelFile)
}

func maxAbsDiff(a, b []float32) float64 {
	var m float64
	for i := range a {
		m = max(m, math.Abs(float64(a[i])-float64(b[i])))
	}
	return m
}

// TestFixtures checks the engine against every recorded llama.cpp run:
// teacher-forced along the recorded ids, the logits must be within the
// fixture's tolerance and the greedy choice must equal the recorded id
// inside the stable prefix (and within llama.cpp's top 5 beyond it for
// quantised weights); free-running greedy generation must reproduce the
// stable prefix.
func TestFixtures(t *testing.T) {
	for _, c := range fixtureCases() {
		t.Run(filepath.Base(c.json), func(t *testing.T) {
			ff, path := loadFixture(t, c)
			// Each run is compared with the engine keeping its KV cache
			// in the run's type.
			models := map[string]*Model{}
			for _, kv := range []KVType{KVF16, KVF32} {
				m, err := Load(path, Options{Threads: 2, KVCache: kv})
				require.NoError(t, err)
				defer m.Close()
				models[kv.String()] = m
			}
			for _, run := range ff.Runs {
				name := run.KVCacheType + "/" + run.Prompt
				m := models[run.KVCacheType]
				t.Run(name, func(t *testing.T) {
					require.NotNil(t, m, "KV cache type %q", run.KVCacheType)
					stable := len(run.GeneratedIDs)
					if run.StablePrefix != nil && !c.exactly {
						stable = *run.StablePrefix
					}
					tol := c.tolF32
					if run.KVCacheType == "f16" {
						tol = c.tolF16
					}
					// The recorded prompt ids are what the tokenizer gives.
					require.Equal(t, run.PromptIDs, m.Tokenizer().Encode(run.Prompt, true, false), "prompt ids")
					s := m.NewSession()
					ctx := context.Background()
					logits, err := s.eval(ctx, run.PromptIDs)
					require.NoError(t, err)
					var worst float64
					for i, want := range run.GeneratedIDs {
						if i < len(run.Logits) {
							d := maxAbsDiff(logits, run.Logits[i])
							worst = max(worst, d)
							require.LessOrEqualf(t, d, tol, "step %d: logits differ by %g", i, d)
						}
						got := argmax(logits)
						// Inside the stable prefix the choice must be llama.cpp's,
						// except at a near-tie: when the engine's own logits for the
						// two tokens are within the fixture's logit tolerance, a
						// single activation rounding differently (the notes'
						// "rounding flip") may pick either. Free-running generation
						// is then only compared up to that step.
						if i < stable && got != want {
							gap := float64(logits[got] - logits[want])
							require.LessOrEqualf(t, gap, tol, "step %d: greedy token %d, llama.cpp %d (gap %g)", i, got, want, gap)
							t.Logf("step %d: near-tie %d vs llama.cpp's %d (gap %.3g)", i, got, want, gap)
							stable = i
						}
						if c.top5 && i < len(run.Top5IDs) {
							require.Containsf(t, run.Top5IDs[i], got, "step %d: argmax not in llama.cpp's top 5", i)
						}
						if i+1 < len(run.GeneratedIDs) {
							logits, err = s.eval(ctx, []int32{want})
							require.NoError(t, err)
						}
					}
					t.Logf("max |logit diff| over %d steps: %.3g (stable prefix %d/%d)", len(run.Logits), worst, stable, len(run.GeneratedIDs))

					// Free-running greedy generation through Generate.
					var got []int32
					var text []byte
					g := m.NewSession()
					res, err := g.Generate(ctx, GenerateRequest{Prompt: run.PromptIDs, MaxTokens: len(run.GeneratedIDs)}, func(tk Token) error {
						if tk.ID >= 0 {
							got = append(got, tk.ID)
						}
						text = append(text, tk.Text...)
						return nil
					})
					require.NoError(t, err)
					require.Equal(t, run.GeneratedIDs[:stable], got[:min(stable, len(got))])
					if stable == len(run.GeneratedIDs) {
						require.Equal(t, StopLength, res.StopReason)
						require.Equal(t, len(run.GeneratedIDs), res.CompletionTokens)
						// Emitted text is always valid UTF-8: exact bytes when the
						// recorded bytes are valid; otherwise the valid characters
						// must agree (replacement policies for invalid bytes differ).
						want := run.GeneratedText
						if run.GeneratedTextHex != "" {
							b, err := hex.DecodeString(run.GeneratedTextHex)
							require.NoError(t, err)
							want = string(b)
						}
						require.True(t, utf8.Valid(text))
						if utf8.ValidString(want) {
							require.Equal(t, want, string(text), "generated text")
						} else {
							drop := func(s string) string { return strings.ReplaceAll(strings.ToValidUTF8(s, ""), "\uFFFD", "") }
							require.Equal(t, drop(want), drop(string(text)), "generated text, valid characters")
						}
					}
					require.Equal(t, len(run.PromptIDs), res.PromptTokens)
				})
			}
		})
	}
}

// upstreamCase is a case of testdata/model/expected/stories260K.upstream.json.
type upstreamCase struct {
	ID                  string          `json:"id"`
	Prompt              string          `json:"prompt"`
	Steps               int             `json:"steps"`
	ExpectedText        string          `json:"expected_text"`
	DerivedGeneratedIDs []int32         `json:"derived_generated_ids"`
	DerivedPromptIDs    json.RawMessage `json:"derived_prompt_ids"`
	ExpectedCounts      map[string]int  `json:"expected_prompt_token_counts"`
	FirstGeneratedIDs   []int32         `json:"derived_first_generated_ids"`
	FirstGeneratedText  string          `json:"expected_first_generated_text"`
	Extra               map[string]any  `json:"-"`
}

// TestUpstreamStories260K: greedy from BOS reproduces llama2.c's recorded
// text byte for byte (run.c strips the first piece's leading space).
func TestUpstreamStories260K(t *testing.T) {
	raw, err := os.ReadFile("../../testdata/model/expected/stories260K.upstream.json")
	require.NoError(t, err)
	var f struct {
		Cases []upstreamCase `json:"cases"`
	}
	require.NoError(t, json.Unmarshal(raw, &f))
	m, err := Load("../../testdata/model/stories260K.gguf", Options{Threads: 2})
	require.NoError(t, err)
	defer m.Close()
	n := 0
	for _, c := range f.Cases {
		if c.ExpectedText == "" || c.Prompt != "" {
			continue
		}
		n++
		t.Run(c.ID, func(t *testing.T) {
			s := m.NewSession()
			var ids []int32
			var text []byte
			// run.c runs `steps` positions starting with BOS: steps-1 new tokens
			// are printed after the BOS one... it generates `steps` tokens when
			// the prompt is BOS only (pos 0 is the BOS).
			_, err := s.Generate(context.Background(), GenerateRequest{Prompt: []int32{m.Tokenizer().BOS()}, MaxTokens: c.Steps}, func(tk Token) error {
				if tk.ID >= 0 {
					ids = append(ids, tk.ID)
				}
				text = append(text, tk.Text...)
				return nil
			})
			require.NoError(t, err)
			got := string(text)
			if len(got) > 0 && got[0] == ' ' {
				got = got[1:]
			}
			// The expected text may end before the last token's piece is
			// complete; compare the prefix run.c printed.
			require.Truef(t, len(got) >= len(c.ExpectedText) && got[:len(c.ExpectedText)] == c.ExpectedText,
				"got  %q\nwant %q", got, c.ExpectedText)
			if c.DerivedGeneratedIDs != nil {
				require.True(t, slices.Equal(c.DerivedGeneratedIDs, ids[:len(c.DerivedGeneratedIDs)]))
			}
		})
	}
	require.Positive(t, n)

	for _, c := range f.Cases {
		var ids map[string][]int32
		if len(c.DerivedPromptIDs) > 0 && c.DerivedPromptIDs[0] == '{' {
			require.NoError(t, json.Unmarshal(c.DerivedPromptIDs, &ids))
		} else if len(c.DerivedPromptIDs) > 0 {
			var one []int32
			require.NoError(t, json.Unmarshal(c.DerivedPromptIDs, &one))
			ids = map[string][]int32{c.Prompt: one}
		}
		for prompt, want := range ids {
			got := m.Tokenizer().Encode(prompt, true, false)
			require.Equal(t, want, got, "%s: prompt %q", c.ID, prompt)
			if n, ok := c.ExpectedCounts[prompt]; ok {
				require.Len(t, got, n)
			}
		}
		if c.FirstGeneratedIDs == nil {
			continue
		}
		// llama.cpp greedy after the prompt: ids and their text.
		s := m.NewSession()
		var gotIDs []int32
		var text string
		_, err := s.Generate(context.Background(), GenerateRequest{Prompt: m.Tokenizer().Encode(c.Prompt, true, false), MaxTokens: len(c.FirstGeneratedIDs)}, func(tk Token) error {
			if tk.ID >= 0 {
				gotIDs = append(gotIDs, tk.ID)
			}
			text += tk.Text
			return nil
		})
		require.NoError(t, err)
		require.Equal(t, c.FirstGeneratedIDs, gotIDs, c.ID)
		require.Equal(t, c.FirstGeneratedText, text, c.ID)
	}
}
