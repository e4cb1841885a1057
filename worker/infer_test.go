package worker

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// llamacppRef is testdata/model/expected/stories260K.llamacpp.json: greedy
// runs of llama.cpp on the test model.
type llamacppRef struct {
	Runs []struct {
		Prompt        string  `json:"prompt"`
		KVCacheType   string  `json:"kv_cache_type"`
		PromptIDs     []int32 `json:"prompt_ids"`
		NPredict      int     `json:"n_predict"`
		GeneratedIDs  []int32 `json:"generated_ids"`
		GeneratedText string  `json:"generated_text"`
	} `json:"runs"`
}

// upstreamRef is testdata/model/expected/stories260K.upstream.json:
// expectations quoted from third-party test suites.
type upstreamRef struct {
	Cases []struct {
		ID                         string         `json:"id"`
		Prompt                     string         `json:"prompt"`
		ExpectedFirstGeneratedText string         `json:"expected_first_generated_text"`
		DerivedFirstGeneratedIDs   []int32        `json:"derived_first_generated_ids"`
		ExpectedPromptTokenCounts  map[string]int `json:"expected_prompt_token_counts"`
	} `json:"cases"`
}

func loadLlamacppRef(t *testing.T) llamacppRef {
	var ref llamacppRef
	require.NoError(t, json.Unmarshal(readFile(t, "../testdata/model/expected/stories260K.llamacpp.json"), &ref))
	require.NotEmpty(t, ref.Runs)
	return ref
}

func loadUpstreamRef(t *testing.T) upstreamRef {
	var ref upstreamRef
	require.NoError(t, json.Unmarshal(readFile(t, "../testdata/model/expected/stories260K.upstream.json"), &ref))
	require.NotEmpty(t, ref.Cases)
	return ref
}

// TestInferGreedyMatchesReference streams greedy generations through
// /v1/infer and compares them with llama.cpp's recorded output (f32 KV
// cache, the engine's precision).
func TestInferGreedyMatchesReference(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	ref := loadLlamacppRef(t)
	n := 0
	for _, run := range ref.Runs {
		if run.KVCacheType != "f32" || run.Prompt == "" { // an empty prompt is a 400 here
			continue
		}
		n++
		t.Run(run.Prompt, func(t *testing.T) {
			got := infer(t, base, map[string]any{"prompt": run.Prompt, "max_tokens": run.NPredict, "temperature": 0})
			require.Equal(t, "started", got.Order[0])
			require.Equal(t, "end", got.Order[len(got.Order)-1], "events: %v", got.Order)
			require.Nil(t, got.Err)
			require.True(t, strings.HasPrefix(got.Started.ID, "req-"))
			require.Equal(t, len(run.PromptIDs), got.Started.PromptTokens)
			require.Equal(t, run.GeneratedIDs, got.ids())
			require.Equal(t, run.GeneratedText, got.text())
			for i, tk := range got.Tokens {
				require.Equal(t, i, tk.Index)
			}
			require.Equal(t, StopLength, got.End.StopReason)
			require.Equal(t, len(run.PromptIDs), got.End.TokensIn)
			require.Equal(t, run.NPredict, got.End.TokensOut)
			require.Greater(t, got.End.GenMS, 0.0)
			require.Greater(t, got.End.TokensPerSecond, 0.0)
		})
	}
	require.Equal(t, 3, n, "reference runs used")
}

// TestInferUpstreamExpectations checks the third-party expectations: the
// first greedy tokens of onicai's test and llama.cpp's prompt token counts.
func TestInferUpstreamExpectations(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	ref := loadUpstreamRef(t)
	checked := 0
	for _, c := range ref.Cases {
		if c.ExpectedFirstGeneratedText != "" {
			checked++
			t.Run(c.ID, func(t *testing.T) {
				got := infer(t, base, map[string]any{"prompt": c.Prompt, "max_tokens": len(c.DerivedFirstGeneratedIDs), "temperature": 0})
				require.Equal(t, c.ExpectedFirstGeneratedText, got.text())
				require.Equal(t, c.DerivedFirstGeneratedIDs, got.ids())
			})
		}
		for prompt, want := range c.ExpectedPromptTokenCounts {
			checked++
			t.Run(c.ID+"/"+prompt, func(t *testing.T) {
				got := infer(t, base, map[string]any{"prompt": prompt, "max_tokens": 1})
				require.Equal(t, want, got.Started.PromptTokens)
				require.Equal(t, want, got.End.TokensIn)
			})
		}
	}
	require.Equal(t, 3, checked)
}

// TestInferMessages runs the native endpoint with chat messages (the
// model has no chat template, so the engine's fallback applies) and checks
// that a fixed seed reproduces a sampled generation.
func TestInferMessages(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	body := map[string]any{
		"messages":    []Message{{Role: "system", Content: "Tell a story."}, {Role: "user", Content: "Once upon a time"}},
		"max_tokens":  12,
		"temperature": 0.9, "top_k": 20, "top_p": 0.9, "min_p": 0.01, "repeat_penalty": 1.1, "seed": 42,
	}
	a := infer(t, base, body)
	b := infer(t, base, body)
	require.NotNil(t, a.End)
	require.Greater(t, a.Started.PromptTokens, 4)
	require.Equal(t, a.ids(), b.ids(), "same seed, same tokens")
	require.Equal(t, a.text(), b.text())
	require.LessOrEqual(t, len(a.Tokens), 12)
}

// TestInferStop checks that a stop string ends generation with "stop".
func TestInferStop(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	ref := loadLlamacppRef(t)
	run := ref.Runs[len(ref.Runs)-1]
	full := infer(t, base, map[string]any{"prompt": run.Prompt, "max_tokens": run.NPredict, "temperature": 0})
	// Stop at the second word of the greedy text.
	words := strings.Fields(full.text())
	require.Greater(t, len(words), 3)
	stop := words[2]
	got := infer(t, base, map[string]any{"prompt": run.Prompt, "max_tokens": run.NPredict, "temperature": 0, "stop": []string{stop}})
	require.Equal(t, StopString, got.End.StopReason)
	require.Less(t, got.End.TokensOut, run.NPredict)
	// The stop string and what follows are not sent.
	require.True(t, strings.HasPrefix(full.text(), got.text()+stop), "%q + stop %q is a prefix of %q", got.text(), stop, full.text())
	require.NotContains(t, got.text(), stop)
}

// TestMaxTokensBeyondRoom: a max_tokens within the context but beyond the
// room the prompt leaves generates to the end of the context ("length").
func TestMaxTokensBeyondRoom(t *testing.T) {
	cfg := testConfig(t)
	cfg.ContextSize = 32
	_, base := startServer(t, cfg)
	got := infer(t, base, map[string]any{"prompt": "Joe loves writing stories", "max_tokens": 32, "temperature": 0})
	require.Equal(t, StopLength, got.End.StopReason)
	require.Equal(t, 32-got.Started.PromptTokens, got.End.TokensOut)
	require.Equal(t, 32-got.Started.PromptTokens, got.Started.MaxTokens)
}

func TestHealthAndInfo(t *testing.T) {
	s, base := startServer(t, testConfig(t))
	var h Health
	require.Equal(t, http.StatusOK, getJSON(t, base+"/health", &h))
	require.Equal(t, Health{Status: "ok", State: StateReady}, h)

	var in Info
	require.Equal(t, http.StatusOK, getJSON(t, base+"/v1/info", &in))
	require.Equal(t, "w-test", in.ID)
	require.Equal(t, testModelPath, in.ModelPath)
	require.Equal(t, "stories260K", in.Model)
	require.Equal(t, "llama", in.Architecture)
	require.Equal(t, 2048, in.ContextLength)
	require.Equal(t, "cpu", in.Device)
	require.Equal(t, 1, in.Threads)
	require.Equal(t, 1, in.Slots)
	require.Equal(t, StateReady, in.State)
	require.Zero(t, in.InFlight)
	require.Zero(t, in.Queued)
	require.Equal(t, DefaultQueue, in.QueueCapacity)
	require.Equal(t, s.Info(), in)

	var models struct {
		Object string `json:"object"`
		Data   []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	require.Equal(t, http.StatusOK, getJSON(t, base+"/v1/models", &models))
	require.Equal(t, "list", models.Object)
	require.Len(t, models.Data, 1)
	require.Equal(t, "stories260K", models.Data[0].ID)
}

// TestLoadFailure: a missing model file leaves the worker "failed": health
// 503 with the error, inference 503, WaitReady wraps ErrLoad.
func TestLoadFailure(t *testing.T) {
	cfg := testConfig(t)
	cfg.ModelPath = t.TempDir() + "/missing.gguf"
	cfg.Load = LoadEngine
	s, err := New(cfg)
	require.NoError(t, err)
	ctx := testCtx(t)
	require.NoError(t, s.Start(ctx))
	defer s.Close()
	require.ErrorIs(t, s.WaitReady(ctx), ErrLoad)
	base := "http://" + s.Addr().String()
	var h Health
	require.Equal(t, http.StatusServiceUnavailable, getJSON(t, base+"/health", &h))
	require.Equal(t, StateFailed, h.State)
	require.Contains(t, h.Error, "missing.gguf")
	resp := post(t, ctx, base+"/v1/infer", `{"prompt":"hi"}`)
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
}

// TestLoadRefusesSlotsPastTheMemoryLimit: the memory limit counts every
// slot's KV cache, so a worker whose slots at its context would not fit
// fails at load, saying so, instead of when the slots fill.
func TestLoadRefusesSlotsPastTheMemoryLimit(t *testing.T) {
	for _, slots := range []int{1, 2} {
		cfg := testConfig(t)
		cfg.Load = LoadEngine
		// stories260K at 131072 positions: 84 MB of f16 cache per slot.
		cfg.ContextSize, cfg.MemoryLimit, cfg.Slots = 1<<17, 120<<20, slots
		s, err := New(cfg)
		require.NoError(t, err)
		ctx := testCtx(t)
		require.NoError(t, s.Start(ctx))
		err = s.WaitReady(ctx)
		s.Close()
		if slots == 1 {
			require.NoError(t, err)
			continue
		}
		require.ErrorIs(t, err, ErrLoad)
		require.ErrorContains(t, err, "fewer slots")
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		field string
		set   func(*Config)
	}{
		{"ID", func(c *Config) { c.ID = "" }},
		{"ModelPath", func(c *Config) { c.ModelPath = "" }},
		{"Host", func(c *Config) { c.Host = "not-an-ip" }},
		{"Port", func(c *Config) { c.Port = 70000 }},
		{"Device", func(c *Config) { c.Device = "cuda" }},
		{"Threads", func(c *Config) { c.Threads = -1 }},
		{"Slots", func(c *Config) { c.Slots = 0 }},
		{"Queue", func(c *Config) { c.Queue = -1 }},
		{"ContextSize", func(c *Config) { c.ContextSize = -5 }},
		{"HeartbeatInterval", func(c *Config) { c.HeartbeatInterval = 0 }},
		{"DrainTimeout", func(c *Config) { c.DrainTimeout = -1 }},
		{"Load", func(c *Config) { c.Load = nil }},
		{"NodeURL", func(c *Config) { c.NodeURL = "ftp://x" }},
		{"Secret", func(c *Config) { c.Secret = "" }},
		{"Secret", func(c *Config) { c.Secret = "short" }},
		{"OrphanGrace", func(c *Config) { c.OrphanGrace = -time.Second }},
		{"OrphanGrace", func(c *Config) { c.OrphanGrace, c.HeartbeatInterval = time.Second, 2*time.Second }},
	} {
		t.Run(tc.field, func(t *testing.T) {
			cfg := testConfig(t)
			tc.set(&cfg)
			_, err := New(cfg)
			require.ErrorIs(t, err, ErrBadConfig)
			require.Contains(t, err.Error(), tc.field)
		})
	}
	_, err := New(testConfig(t))
	require.NoError(t, err, fmt.Sprint("the base config is valid"))
}

// TestInferLogprobs: /v1/infer with logprobs (Ollama's logprobs and
// top_logprobs go this way) puts each token's entry on its token event,
// the same entries the chat endpoint answers for the same greedy request;
// a text-only chunk has none, and without logprobs no event has one.
func TestInferLogprobs(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	msgs := []Message{{Role: "user", Content: "Once upon a time"}}
	body := map[string]any{"messages": msgs, "max_tokens": 8, "temperature": 0, "logprobs": true, "top_logprobs": 2}
	got := infer(t, base, body)
	require.NotNil(t, got.End)
	var cc ChatCompletion
	require.NoError(t, json.NewDecoder(post(t, testCtx(t), base+"/v1/chat/completions", body).Body).Decode(&cc))
	var entries []LogprobContent
	for _, tk := range got.Tokens {
		if tk.ID < 0 {
			require.Nil(t, tk.Logprob, "a text-only chunk")
			continue
		}
		require.NotNil(t, tk.Logprob, "token %d", tk.Index)
		require.Len(t, tk.Logprob.TopLogprobs, 2)
		entries = append(entries, *tk.Logprob)
	}
	require.Len(t, entries, got.End.TokensOut)
	require.Equal(t, cc.Choices[0].Logprobs.Content, entries)

	delete(body, "logprobs")
	delete(body, "top_logprobs")
	for _, tk := range infer(t, base, body).Tokens {
		require.Nil(t, tk.Logprob)
	}
}
