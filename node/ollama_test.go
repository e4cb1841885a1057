package node_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/synth"
	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/nodetest"
)

// ollamaCall sends one Ollama API request; key "" sends none (a loopback
// client, read and inference only).
func ollamaCall(t *testing.T, n *node.Node, method, path, key, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, n.URL()+path, strings.NewReader(body))
	require.NoError(t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b
}

// ndjson splits an NDJSON body into its objects.
func ndjson(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), "line %q", sc.Text())
		out = append(out, m)
	}
	return out
}

type ollamaShow struct {
	Template   string         `json:"template"`
	Parameters string         `json:"parameters"`
	ModelInfo  map[string]any `json:"model_info"`
	Details    struct {
		Format            string   `json:"format"`
		Family            string   `json:"family"`
		Families          []string `json:"families"`
		ParameterSize     string   `json:"parameter_size"`
		QuantizationLevel string   `json:"quantization_level"`
	} `json:"details"`
}

// TestOllamaOpenWebUI replays what Open WebUI sends on connect and on a
// chat (version, tags, show, a streamed chat), through a node without a
// worker and through the worker's own node, then the model routes.
func TestOllamaOpenWebUI(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c := servingCluster(t, 2)
	w := spawn(t, c.Nodes[1], "node1", 1)
	waitSchedulable(t, c, 1)

	for _, n := range c.Nodes {
		st, b := ollamaCall(t, n, "GET", "/api/version", "", "")
		require.Equal(t, 200, st)
		require.Contains(t, string(b), `"version"`)

		st, b = ollamaCall(t, n, "GET", "/api/tags", "", "")
		require.Equal(t, 200, st, string(b))
		var tags struct {
			Models []struct {
				Name    string `json:"name"`
				Digest  string `json:"digest"`
				Details struct {
					Family            string `json:"family"`
					ParameterSize     string `json:"parameter_size"`
					QuantizationLevel string `json:"quantization_level"`
				} `json:"details"`
			} `json:"models"`
		}
		require.NoError(t, json.Unmarshal(b, &tags))
		require.Len(t, tags.Models, 1)
		m := tags.Models[0]
		require.Equal(t, "builtin--stories260k", m.Name)
		require.Equal(t, "llama", m.Details.Family, n.Name())
		require.Regexp(t, `^\d+K$`, m.Details.ParameterSize)
		require.NotEmpty(t, m.Details.QuantizationLevel)

		// Open WebUI names models with their tag.
		st, b = ollamaCall(t, n, "POST", "/api/show", "", `{"model":"builtin--stories260k:latest"}`)
		require.Equal(t, 200, st, string(b))
		var show ollamaShow
		require.NoError(t, json.Unmarshal(b, &show))
		require.Equal(t, "gguf", show.Details.Format)
		require.Equal(t, "llama", show.Details.Family)
		require.Equal(t, []string{"llama"}, show.Details.Families)
		require.Equal(t, m.Details.ParameterSize, show.Details.ParameterSize)
		require.Equal(t, "llama", show.ModelInfo["general.architecture"])
		require.Contains(t, show.ModelInfo, "llama.context_length")
		require.Contains(t, show.Parameters, "temperature")

		st, b = ollamaCall(t, n, "POST", "/api/chat", "",
			`{"model":"stories260k:latest","messages":[{"role":"user","content":"Tell me a story"}],"options":{"temperature":0,"num_predict":16}}`)
		require.Equal(t, 200, st, string(b))
		lines := ndjson(t, b)
		require.Greater(t, len(lines), 2)
		var text strings.Builder
		for _, l := range lines[:len(lines)-1] {
			require.Equal(t, false, l["done"])
			text.WriteString(l["message"].(map[string]any)["content"].(string))
		}
		require.NotEmpty(t, text.String())
		last := lines[len(lines)-1]
		require.Equal(t, true, last["done"])
		require.Contains(t, []any{"stop", "length"}, last["done_reason"])

		// A name taken from /api/tags works on the OpenAI routes too.
		st, b = ollamaCall(t, n, "POST", "/v1/chat/completions", "",
			`{"model":"stories260k:latest","messages":[{"role":"user","content":"Hi"}],"max_tokens":4}`)
		require.Equal(t, 200, st, string(b))
	}

	n0, n1 := c.Nodes[0], c.Nodes[1]
	// The node holding the file reads the whole GGUF metadata: long
	// arrays (the vocabulary) are null, short facts are there.
	_, b := ollamaCall(t, n1, "POST", "/api/show", "", `{"name":"stories260k"}`)
	var show ollamaShow
	require.NoError(t, json.Unmarshal(b, &show))
	require.Contains(t, show.ModelInfo, "tokenizer.ggml.tokens")
	require.Nil(t, show.ModelInfo["tokenizer.ggml.tokens"])
	require.Contains(t, show.ModelInfo, "llama.embedding_length")

	// An empty prompt loads the model: done at once.
	st, b := ollamaCall(t, n0, "POST", "/api/generate", "", `{"model":"stories260k"}`)
	require.Equal(t, 200, st, string(b))
	require.Contains(t, string(b), `"done":true`)
	require.Contains(t, string(b), `"done_reason":"load"`)
	st, _ = ollamaCall(t, n0, "POST", "/api/generate", "", `{"model":"nope"}`)
	require.Equal(t, 404, st)

	for _, tc := range []struct {
		name, method, path, key, body string
		status                        int
		contains                      string
	}{
		{"show unknown", "POST", "/api/show", "", `{"model":"nope:latest"}`, 404, `not found`},
		{"show without model", "POST", "/api/show", "", `{}`, 400, `model is required`},
		{"embed unknown model", "POST", "/api/embed", "", `{"model":"nope","input":"x"}`, 404, `not found`},
		{"embed without input", "POST", "/api/embed", "", `{"model":"stories260k"}`, 400, `input is required`},
		{"embeddings without prompt", "POST", "/api/embeddings", "", `{"model":"stories260k"}`, 400, `prompt is required`},
		{"embed empty input", "POST", "/api/embed", "", `{"model":"stories260k","input":[""]}`, 400, `must not be empty`},
		{"pull needs admin", "POST", "/api/pull", "", `{"model":"builtin:stories260k"}`, 403, `admin`},
		{"delete needs admin", "DELETE", "/api/delete", "", `{"model":"stories260k"}`, 403, `admin`},
		{"delete unknown", "DELETE", "/api/delete", n0.AdminKey(), `{"model":"nope"}`, 404, `not found`},
		{"pull unknown", "POST", "/api/pull", n0.AdminKey(), `{"model":"nope","stream":false}`, 500, `nope`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, b := ollamaCall(t, n0, tc.method, tc.path, tc.key, tc.body)
			require.Equal(t, tc.status, st, string(b))
			require.Contains(t, string(b), tc.contains)
		})
	}

	// Embeddings: Ollama's two routes and OpenAI's, through the node
	// without the worker, agree.
	st, b = ollamaCall(t, n0, "POST", "/api/embed", "", `{"model":"stories260k:latest","input":["Once upon a time","The cat"]}`)
	require.Equal(t, 200, st, string(b))
	var emb struct {
		Embeddings [][]float64 `json:"embeddings"`
	}
	require.NoError(t, json.Unmarshal(b, &emb))
	require.Len(t, emb.Embeddings, 2)
	require.Len(t, emb.Embeddings[0], 64)
	require.NotEqual(t, emb.Embeddings[0], emb.Embeddings[1])
	st, b = ollamaCall(t, n0, "POST", "/api/embeddings", "", `{"model":"stories260k","prompt":"Once upon a time"}`)
	require.Equal(t, 200, st, string(b))
	var legacy struct {
		Embedding []float64 `json:"embedding"`
	}
	require.NoError(t, json.Unmarshal(b, &legacy))
	require.InDeltaSlice(t, emb.Embeddings[0], legacy.Embedding, 1e-6)
	oc := openai.NewClient(option.WithBaseURL(n0.URL()+"/v1/"), option.WithAPIKey("unused-on-loopback"))
	oe, err := oc.Embeddings.New(context.Background(), openai.EmbeddingNewParams{
		Model: "stories260k",
		Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("Once upon a time")},
	})
	require.NoError(t, err)
	require.Len(t, oe.Data, 1)
	require.InDeltaSlice(t, emb.Embeddings[0], oe.Data[0].Embedding, 1e-6)

	// Pull: Ollama's progress stream over a model_download to node0 (a
	// copy from node1, which holds the model).
	st, b = ollamaCall(t, n0, "POST", "/api/pull", n0.AdminKey(), `{"model":"builtin:stories260k"}`)
	require.Equal(t, 200, st, string(b))
	lines := ndjson(t, b)
	require.Equal(t, "pulling manifest", lines[0]["status"])
	require.Equal(t, "success", lines[len(lines)-1]["status"], string(b))
	var progressed bool
	for _, l := range lines {
		if s, _ := l["status"].(string); strings.HasPrefix(s, "downloading") {
			progressed = true
			require.Positive(t, l["total"])
		}
	}
	require.True(t, progressed, string(b))
	_, b = ollamaCall(t, n0, "POST", "/api/show", "", `{"model":"stories260k"}`)
	require.Contains(t, string(b), "tokenizer.ggml.tokens", "node0 now reads the GGUF itself")

	// Delete: refused while a worker serves the model, nothing deleted.
	st, b = ollamaCall(t, n0, "DELETE", "/api/delete", n0.AdminKey(), `{"model":"stories260k:latest"}`)
	require.Equal(t, http.StatusConflict, st, string(b))
	require.Contains(t, string(b), "node1")
	require.Contains(t, string(b), "retire")
	_, b = ollamaCall(t, n0, "POST", "/api/show", "", `{"model":"stories260k"}`)
	require.Contains(t, string(b), "tokenizer.ggml.tokens", "node0's copy is still there")

	// Once the worker is retired, the model leaves every node.
	run(t, n0, map[string]any{"operation": "active_worker_retire", "worker_id": w.WorkerID}, nil)
	require.Eventually(t, func() bool {
		_, ok := n0.Registry().Worker(w.WorkerID)
		return !ok
	}, nodetest.WaitTimeout, 50*time.Millisecond, "the retired worker leaves the registry")
	st, b = ollamaCall(t, n0, "DELETE", "/api/delete", n0.AdminKey(), `{"model":"stories260k:latest"}`)
	require.Equal(t, http.StatusOK, st, string(b))
	require.Eventually(t, func() bool {
		return len(n0.Registry().Models()) == 0
	}, nodetest.WaitTimeout, 50*time.Millisecond, "no node holds the model")
	st, _ = ollamaCall(t, n0, "POST", "/api/show", "", `{"model":"stories260k"}`)
	require.Equal(t, http.StatusNotFound, st)
}

// hostileGGUF writes a loadable model whose metadata tries to make
// /api/show expensive: a nested array of large arrays, a wide nested
// array, multi-MB strings and chat template, long arrays of long strings,
// and a NaN (which JSON cannot carry).
func hostileGGUF(t *testing.T) string {
	t.Helper()
	cfg := synth.DefaultConfig()
	cfg.ChatTemplate = strings.Repeat("{{ messages }}", (4<<20)/14)
	w, err := synth.Build(cfg)
	require.NoError(t, err)
	arr := func(et gguf.ValueType, data any) gguf.Value {
		return gguf.Value{Type: gguf.TypeArray, ArrayType: et, Data: data}
	}
	var nested []gguf.Value
	for range 4 {
		nested = append(nested, arr(gguf.TypeInt32, make([]int32, 512<<10)))
	}
	var wide []gguf.Value
	for range 64 {
		var mid []gguf.Value
		for range 64 {
			mid = append(mid, arr(gguf.TypeUint16, make([]uint16, 64)))
		}
		wide = append(wide, arr(gguf.TypeArray, mid))
	}
	long := make([]string, 64)
	for i := range long {
		long[i] = strings.Repeat("\x01", 64<<10) // each byte escapes to 6
	}
	for _, kv := range []struct {
		k string
		v any
	}{
		{"hostile.nested", arr(gguf.TypeArray, nested)},
		{"hostile.wide", arr(gguf.TypeArray, wide)},
		{"hostile.string", strings.Repeat("A", 4<<20)},
		{"hostile.strings", long},
		{"hostile.nan", float32(math.NaN())},
		{"hostile.small", []uint8{1, 2, 3}},
	} {
		require.NoError(t, w.AddKV(kv.k, kv.v))
	}
	path := filepath.Join(t.TempDir(), "hostile.gguf")
	require.NoError(t, w.WriteFile(path))
	return path
}

// TestOllamaShowHostileGGUF: /api/show of a GGUF with ~30 MB of hostile
// metadata answers in well under a few MiB, every value capped (arrays at
// every depth, strings, the template), the template written once; a
// repeated request reads the cached facts instead of parsing the file again.
func TestOllamaShowHostileGGUF(t *testing.T) {
	c := nodetest.New(t, 1)
	n := c.Nodes[0]
	var e modelcat.Entry
	run(t, n, map[string]any{"operation": "model_download", "model": hostileGGUF(t)}, &e)

	body := `{"model":"` + e.ID + `"}`
	for i := range 2 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		st, b := ollamaCall(t, n, "POST", "/api/show", "", body)
		runtime.ReadMemStats(&after)
		require.Equal(t, http.StatusOK, st, "%.300s", b)
		require.Less(t, len(b), 3<<20, "the answer is bounded")
		alloc := after.TotalAlloc - before.TotalAlloc
		t.Logf("request %d: %d bytes answered, %d MiB allocated", i, len(b), alloc>>20)
		if i == 1 {
			// The first parse alone allocates the ~30 MB of metadata.
			require.Less(t, alloc, uint64(24<<20), "the second request parses nothing")
		}

		var show struct {
			ollamaShow
			Modelfile string `json:"modelfile"`
		}
		require.NoError(t, json.Unmarshal(b, &show))
		require.LessOrEqual(t, len(show.Template), 64<<10+64)
		require.Contains(t, show.Template, "rbee: cut to")
		require.True(t, strings.HasPrefix(show.Template, "{{ messages }}"))
		require.NotContains(t, show.Modelfile, "{{ messages }}", "the template is written once")
		mi := show.ModelInfo
		require.Equal(t, "llama", mi["general.architecture"])
		require.Contains(t, mi, "llama.context_length")
		require.Equal(t, []any{nil, nil, nil, nil}, mi["hostile.nested"], "long arrays inside arrays are null")
		s, _ := mi["hostile.string"].(string)
		require.LessOrEqual(t, len(s), 4<<10+64)
		require.Contains(t, s, "rbee: cut to")
		require.Nil(t, mi["hostile.nan"])
		require.Equal(t, []any{1.0, 2.0, 3.0}, mi["hostile.small"])
		require.Nil(t, mi["tokenizer.ggml.tokens"])
		// The wide array and the escaped strings do not fit the 1 MiB of
		// model_info together: what does not is null and counted.
		require.Contains(t, mi, "hostile.wide")
		require.Contains(t, mi, "hostile.strings")
		require.NotNil(t, mi["rbee.model_info_cut"])
		mib, err := json.Marshal(mi)
		require.NoError(t, err)
		require.Less(t, len(mib), 1<<20+4<<10)
	}
}

// ollamaErr is Ollama's error body: the message as a string.
func ollamaErr(t *testing.T, b []byte) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	require.NoError(t, json.Unmarshal(b, &e), "Ollama's error shape: %s", b)
	require.NotEmpty(t, e.Error, "%s", b)
	return e.Error
}

// TestOllamaParams: /api/generate and /api/chat implement num_predict's
// -1, -2 and 0 (to the end of the context) and repeat_last_n, take the
// options that only tune how Ollama runs a model, and refuse with a 400 in
// Ollama's error shape, naming it, every field and option rbee does not
// implement.
func TestOllamaParams(t *testing.T) {
	c, n := storiesNode(t)

	gen := func(extra string) string {
		return `{"model":"stories260k","prompt":"Once upon a time","stream":false` + extra + `}`
	}
	chat := func(extra string) string {
		return `{"model":"stories260k","messages":[{"role":"user","content":"Once upon a time"}],"stream":false` + extra + `}`
	}
	for _, tc := range []struct {
		name, path, body string
		status           int
		contains         string
	}{
		{"unknown field", "/api/generate", gen(`,"bogus":1`), 400, `unknown field "bogus"`},
		{"suffix", "/api/generate", gen(`,"suffix":"end"`), 400, "suffix"},
		{"images", "/api/generate", gen(`,"images":["AAAA"]`), 400, "images"},
		{"context", "/api/generate", gen(`,"context":[1,2,3]`), 400, "context"},
		{"template", "/api/generate", gen(`,"template":"{{ .Prompt"`), 400, "template"},
		// think true and a level reach the worker, which refuses them
		// for a model that writes no reasoning (TestOllamaThink: one
		// that does); another value is refused here.
		{"think", "/api/generate", gen(`,"think":true`), 400, "think"},
		{"think level", "/api/chat", `{"model":"stories260k","messages":[{"role":"user","content":"x"}],"think":"high"}`, 400, "does not think"},
		{"think unknown level", "/api/generate", gen(`,"think":"extreme"`), 400, "think must be true, false, or one of low, medium, high"},
		{"raw with system", "/api/generate", gen(`,"raw":true,"system":"x"`), 400, "raw"},
		{"tools on generate", "/api/generate", gen(`,"tools":[]`), 400, `unknown field "tools"`},
		{"message images", "/api/chat", `{"model":"stories260k","messages":[{"role":"user","content":"x","images":["AAAA"]}]}`, 400, "messages[0].images"},
		{"message unknown field", "/api/chat", `{"model":"stories260k","messages":[{"role":"user","content":"x","bogus":1}]}`, 400, `messages[0]: unknown field "bogus"`},
		// Open WebUI's tool round trip: the call's id and index, and the
		// tool's answer naming the call by tool_call_id (Ollama takes it).
		{"tool round trip with ids", "/api/chat", `{"model":"stories260k","stream":false,"options":{"num_predict":2},"messages":[{"role":"user","content":"x"},` +
			`{"role":"assistant","content":"","tool_calls":[{"index":0,"id":"call_1","function":{"name":"f","arguments":{"a":1}}}]},{"role":"tool","tool_call_id":"call_1","content":"42"}]}`, 200, `"done":true`},
		{"prompt on chat", "/api/chat", chat(`,"prompt":"x"`), 400, `unknown field "prompt"`},
		{"mirostat", "/api/generate", gen(`,"options":{"mirostat":2}`), 400, "options.mirostat"},
		{"typical_p", "/api/chat", chat(`,"options":{"typical_p":0.5}`), 400, "options.typical_p"},
		{"presence_penalty", "/api/generate", gen(`,"options":{"presence_penalty":1}`), 400, "options.presence_penalty"},
		{"unknown option", "/api/generate", gen(`,"options":{"bogus_opt":1}`), 400, "options.bogus_opt"},
		{"keep_alive not a duration", "/api/generate", gen(`,"keep_alive":"forever"`), 400, `keep_alive "forever"`},
		{"keep_alive an object", "/api/chat", chat(`,"keep_alive":{"m":5}`), 400, "keep_alive must be"},
		{"keep_alive a boolean", "/api/generate", gen(`,"keep_alive":true`), 400, "keep_alive must be"},
		{"keep_alive values Ollama takes", "/api/generate", gen(`,"keep_alive":"-1m","options":{"num_predict":2}`), 200, `"done":true`},
		{"keep_alive 0 as a string", "/api/chat", chat(`,"keep_alive":"0","options":{"num_predict":2}`), 200, `"done":true`},
		{"keep_alive seconds", "/api/chat", chat(`,"keep_alive":3600,"options":{"num_predict":2}`), 200, `"done":true`},
		{"two refused, both named", "/api/generate", gen(`,"suffix":"x","options":{"bogus_opt":1}`), 400, "options.bogus_opt"},
		{"num_ctx above the context", "/api/generate", gen(`,"options":{"num_ctx":99999999}`), 400, "options.num_ctx"},
		{"temperature above 2", "/api/generate", gen(`,"options":{"temperature":3.5,"num_predict":2}`), 200, `"done":true`},
		{"negative temperature", "/api/chat", chat(`,"options":{"temperature":-1,"num_predict":2}`), 400, "temperature"},
		{"num_predict -3", "/api/generate", gen(`,"options":{"num_predict":-3}`), 400, "options.num_predict"},
		{"repeat_last_n reaches the worker", "/api/generate", gen(`,"options":{"repeat_last_n":-2,"num_predict":2}`), 400, "repeat_last_n"},
		{"refused before the empty prompt's load", "/api/generate", `{"model":"stories260k","bogus":1}`, 400, `unknown field "bogus"`},
		{"unknown model, num_predict -1", "/api/generate", `{"model":"nope","prompt":"x","options":{"num_predict":-1}}`, 404, "not found"},
		{"harmless options", "/api/generate", gen(`,"keep_alive":"5m","raw":true,"think":false,"suffix":"","images":[],"context":[],
			"options":{"num_predict":2,"num_ctx":64,"num_thread":2,"num_gpu":1,"use_mmap":true,"mirostat":0,"typical_p":1,"presence_penalty":0,"repeat_last_n":16}`), 200, `"done":true`},
		{"harmless chat fields", "/api/chat", `{"model":"stories260k","stream":false,"keep_alive":-1,"options":{"num_predict":2},
			"messages":[{"role":"user","content":"x","images":[]},{"role":"assistant","content":"y","thinking":"z"},{"role":"user","content":"x"}]}`, 200, `"done":true`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, b := ollamaCall(t, n, "POST", tc.path, "", tc.body)
			require.Equal(t, tc.status, st, "%s", b)
			if st != http.StatusOK {
				msg := ollamaErr(t, b)
				require.Contains(t, msg, tc.contains)
				if tc.name == "two refused, both named" {
					require.Contains(t, msg, "suffix")
				}
				return
			}
			require.Contains(t, string(b), tc.contains)
		})
	}

	// num_predict: a count bounds the answer; -1, -2, 0 and none generate
	// to the end of the context (or a stop), not to the 256 tokens the
	// worker once defaulted to.
	ctxLen := 0
	type final struct {
		DoneReason      string `json:"done_reason"`
		PromptEvalCount int    `json:"prompt_eval_count"`
		EvalCount       int    `json:"eval_count"`
	}
	for _, tc := range []struct {
		name, options string
		unbounded     bool
	}{
		{"5", `{"num_predict":5}`, false},
		{"-1", `{"num_predict":-1}`, true},
		{"-2", `{"num_predict":-2}`, true},
		{"0", `{"num_predict":0}`, true},
		{"absent", `{}`, true},
		{"above the context", `{"num_predict":100000}`, true},
	} {
		t.Run("num_predict "+tc.name, func(t *testing.T) {
			for _, path := range []string{"/api/generate", "/api/chat"} {
				opts := `,"options":` + strings.TrimSuffix(tc.options, "}") + `,"temperature":0,"repeat_penalty":1}`
				opts = strings.Replace(opts, "{,", "{", 1)
				body := gen(opts)
				if path == "/api/chat" {
					body = chat(opts)
				}
				st, b := ollamaCall(t, n, "POST", path, "", body)
				require.Equal(t, http.StatusOK, st, "%s", b)
				var f final
				require.NoError(t, json.Unmarshal(b, &f))
				t.Logf("%s: %+v", path, f)
				if !tc.unbounded {
					require.LessOrEqual(t, f.EvalCount, 5)
					continue
				}
				if f.DoneReason == "length" {
					// Past the old default of 256, to the end of the
					// context: the same length every time.
					require.Greater(t, f.EvalCount, 256)
					if ctxLen == 0 {
						ctxLen = f.PromptEvalCount + f.EvalCount
					}
					require.Equal(t, ctxLen, f.PromptEvalCount+f.EvalCount, "generated to the end of the context")
				} else {
					require.Equal(t, "stop", f.DoneReason)
				}
			}
		})
	}

	// /api/ps: a served model expires "forever" (Ollama's keep_alive -1:
	// the longest duration from now), not at the zero time; /api/show's
	// capabilities; the final chunk of a generation has load_duration.
	st, b := ollamaCall(t, n, "GET", "/api/ps", "", "")
	require.Equal(t, http.StatusOK, st, "%s", b)
	var ps struct {
		Models []struct {
			Name      string    `json:"name"`
			ExpiresAt time.Time `json:"expires_at"`
		} `json:"models"`
	}
	require.NoError(t, json.Unmarshal(b, &ps))
	require.Len(t, ps.Models, 1)
	require.True(t, ps.Models[0].ExpiresAt.After(time.Now().AddDate(200, 0, 0)), "expires_at %v", ps.Models[0].ExpiresAt)
	st, b = ollamaCall(t, n, "POST", "/api/show", "", `{"model":"stories260k"}`)
	require.Equal(t, http.StatusOK, st, "%s", b)
	var show struct {
		Capabilities []string `json:"capabilities"`
	}
	require.NoError(t, json.Unmarshal(b, &show))
	require.Equal(t, []string{"completion"}, show.Capabilities, "stories260k has no chat template, so no tools")
	for _, path := range []string{"/api/generate", "/api/chat"} {
		for _, stream := range []string{"true", "false"} {
			body := gen(`,"options":{"num_predict":2}`)
			if path == "/api/chat" {
				body = chat(`,"options":{"num_predict":2}`)
			}
			body = strings.Replace(body, `"stream":false`, `"stream":`+stream, 1)
			st, b := ollamaCall(t, n, "POST", path, "", body)
			require.Equal(t, http.StatusOK, st, "%s", b)
			lines := ndjson(t, b)
			last := lines[len(lines)-1]
			require.Equal(t, true, last["done"], "%s", b)
			require.Contains(t, last, "load_duration", "%s %s stream %s", b, path, stream)
			require.Contains(t, last, "total_duration")
		}
	}

	// Tools for a model whose template does not render them (stories260k
	// has none) are refused, as Ollama refuses them for a model without
	// the tools capability: the model would never see them.
	toolsChat := `"messages":[{"role":"user","content":"Once upon a time"}],
		"tools":[{"type":"function","function":{"name":"f"}}],"format":"json","options":{"num_predict":12,"temperature":0}}`
	st, b = ollamaCall(t, n, "POST", "/api/chat", "", `{"model":"stories260k",`+toolsChat)
	require.Equal(t, http.StatusBadRequest, st, "%s", b)
	require.Contains(t, ollamaErr(t, b), "does not render tools")

	// A chat stream with tools holds back text that may begin a call (all
	// of a JSON answer) and sends it before the final chunk: created_at
	// never goes back. The model's template renders tools.
	mcfg := synth.DefaultConfig()
	mcfg.ChatTemplate = `{% if tools %}tools:{% for t in tools %} {{ t.function.name }}{% endfor %}{% endif %}{% for m in messages %}{{ m.role }}: {{ m.content }}{% endfor %}assistant:`
	toolsModel := filepath.Join(t.TempDir(), "tools.gguf")
	require.NoError(t, synth.Write(toolsModel, mcfg))
	tw := spawnModel(t, n, n.Name(), toolsModel, 1)
	waitSchedulable(t, c, 2)
	st, b = ollamaCall(t, n, "POST", "/api/chat", "", `{"model":"`+tw.Model+`",`+toolsChat)
	require.Equal(t, http.StatusOK, st, "%s", b)
	lines := ndjson(t, b)
	require.GreaterOrEqual(t, len(lines), 2, "%s", b)
	var prev time.Time
	for i, l := range lines {
		at, err := time.Parse(time.RFC3339Nano, l["created_at"].(string))
		require.NoError(t, err)
		require.False(t, at.Before(prev), "line %d's created_at %v is before the one before it (%v): %s", i, at, prev, b)
		prev = at
	}
	require.NotEmpty(t, lines[len(lines)-2]["message"].(map[string]any)["content"], "the held-back text: %s", b)

	// /api/embed: truncate (true unless false, as Ollama's) cuts an input
	// longer than the context to fit, false refuses it; dimensions is
	// taken at the model's size (stories260k's 64) only; options and
	// keep_alive are taken without effect.
	long := strings.Repeat("Once upon a time ", 1200)
	for _, tc := range []struct {
		name, body string
		status     int
		contains   string
	}{
		{"embed truncates by default", `{"model":"stories260k","input":"` + long + `"}`, 200, `"embeddings"`},
		{"embed truncate true", `{"model":"stories260k","input":["` + long + `","x"],"truncate":true}`, 200, `"embeddings"`},
		{"embed truncate false", `{"model":"stories260k","input":"` + long + `","truncate":false}`, 400, "context_length_exceeded"},
		{"embed dimensions of the model", `{"model":"stories260k","input":"x","dimensions":64}`, 200, `"embeddings"`},
		{"embed other dimensions", `{"model":"stories260k","input":"x","dimensions":8}`, 400, "dimensions 8"},
		{"embed options and keep_alive", `{"model":"stories260k","input":"x","options":{"num_ctx":64,"temperature":0},"keep_alive":"5m"}`, 200, `"embeddings"`},
		{"embed unknown field", `{"model":"stories260k","input":"x","pooling":"cls"}`, 400, `unknown field "pooling"`},
		{"embeddings dimensions", `{"model":"stories260k","prompt":"x","dimensions":64}`, 400, `unknown field "dimensions"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := "/api/embed"
			if strings.HasPrefix(tc.name, "embeddings") {
				path = "/api/embeddings"
			}
			st, b := ollamaCall(t, n, "POST", path, "", tc.body)
			require.Equal(t, tc.status, st, "%.500s", b)
			if st != http.StatusOK {
				require.Contains(t, ollamaErr(t, b), tc.contains)
				return
			}
			require.Contains(t, string(b), tc.contains)
		})
	}
}

// TestOllamaErrorShape: wrapped in ollamaErrorShape, the node's handler
// answers every /api/ error in Ollama's shape, {"error":"..."}, also the
// ones written before the Ollama routes run (authentication, unknown
// routes); other routes and good answers are untouched.
func TestOllamaErrorShape(t *testing.T) {
	c := nodetest.New(t, 1)
	n := c.Nodes[0]
	srv := httptest.NewServer(node.OllamaErrorShape(n.Handler()))
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		method, path, body string
		status             int
		contains           string
		nested             bool // the node API's shape, not Ollama's
	}{
		{"POST", "/api/pull", `{"model":"builtin:stories260k"}`, 403, "admin", false},
		{"DELETE", "/api/delete", `{"model":"stories260k"}`, 403, "admin", false},
		{"POST", "/api/nope", `{}`, 404, "no route", false},
		{"GET", "/api/chat", "", 405, "use POST", false},
		{"POST", "/api/show", `{}`, 400, "model is required", false},
		{"POST", "/api/generate", `{"model":"stories260k","bogus":1}`, 400, "bogus", false},
		{"POST", "/api/show", `{"model":"nope"}`, 404, "not found", false},
		{"GET", "/v1/nope", "", 404, "no route", true},
		{"GET", "/api/version", "", 200, `"version"`, false},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			require.NoError(t, err)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.Equal(t, tc.status, resp.StatusCode, "%s", b)
			require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			switch {
			case tc.status == 200:
				require.Contains(t, string(b), tc.contains)
			case tc.nested:
				var e node.APIError
				require.NoError(t, json.Unmarshal(b, &e))
				require.Contains(t, e.Error.Message, tc.contains)
			default:
				require.Contains(t, ollamaErr(t, b), tc.contains)
			}
		})
	}
}

// TestOllamaDecodeErrorsInJSONTerms: a field of the wrong type in an Ollama
// request is a 400 that names the field and what it must be in JSON terms,
// as the OpenAI routes say it, not Go's struct and type names.
func TestOllamaDecodeErrorsInJSONTerms(t *testing.T) {
	c := nodetest.New(t, 1)
	n := c.Nodes[0]
	for _, tc := range []struct {
		path, body, want string
	}{
		{"/api/generate", `{"model":"stories260k","prompt":"x","options":{"stop":"x"}}`, "options.stop must be an array of strings, not a string"},
		{"/api/generate", `{"model":"stories260k","prompt":"x","options":{"num_predict":"5"}}`, "options.num_predict must be an integer, not a string"},
		{"/api/generate", `{"model":"stories260k","prompt":"x","options":{"seed":1.5}}`, "options.seed must be an integer, not 1.5"},
		// An element of the wrong type: the message names what the field
		// must be, not what the element must be (a string would be refused).
		{"/api/generate", `{"model":"stories260k","prompt":"x","options":{"stop":[1]}}`, "options.stop must be an array of strings, not an array with a number in it"},
		{"/api/chat", `{"model":"stories260k","messages":[5]}`, "messages must be an array of objects, not an array with a number in it"},
		{"/api/generate", `{"model":"stories260k","prompt":["x"]}`, "prompt must be a string, not an array"},
		{"/api/generate", `{"model":"stories260k","prompt":"x","stream":"no"}`, "stream must be a boolean, not a string"},
		{"/api/chat", `{"model":"stories260k","messages":{"role":"user"}}`, "messages must be an array of objects, not an object"},
		{"/api/chat", `{"model":"stories260k","messages":[{"role":"user","content":5}]}`, "messages.content must be a string, not a number"},
		{"/api/chat", `[]`, "the body must be a JSON object, not an array"},
		{"/api/show", `{"model":5}`, "model must be a string, not a number"},
		{"/api/embed", `{"model":["m"],"input":"x"}`, "model must be a string, not an array"},
	} {
		st, b := ollamaCall(t, n, "POST", tc.path, "", tc.body)
		require.Equal(t, 400, st, "%s %s: %s", tc.path, tc.body, b)
		msg := ollamaErr(t, b)
		require.Contains(t, msg, tc.want, tc.body)
		require.NotContains(t, msg, "Go ", tc.body)
	}
}

// TestOllamaToolCallArguments: a past tool call's arguments in an /api/chat
// message are an object, as Ollama sends them; any other value is a 400
// naming the field, not the worker's OpenAI wording ("a JSON object as a
// string"), which an Ollama client that sent a string cannot act on.
func TestOllamaToolCallArguments(t *testing.T) {
	c := nodetest.New(t, 1)
	n := c.Nodes[0]
	call := func(args string) string {
		return `{"model":"stories260k","messages":[{"role":"user","content":"x"},` +
			`{"role":"assistant","content":"","tool_calls":[{"function":{"name":"f","arguments":` + args + `}}]}]}`
	}
	for _, tc := range []struct{ args, want string }{
		{`"{\"a\":1}"`, "messages[1].tool_calls[0].function.arguments must be an object, not a string"},
		{`[1]`, "messages[1].tool_calls[0].function.arguments must be an object, not an array"},
		{`5`, "messages[1].tool_calls[0].function.arguments must be an object, not a number"},
	} {
		st, b := ollamaCall(t, n, "POST", "/api/chat", "", call(tc.args))
		require.Equal(t, 400, st, "%s: %s", tc.args, b)
		require.Contains(t, ollamaErr(t, b), tc.want, tc.args)
	}
}

// TestOllamaShowFields: /api/show refuses what it would otherwise ignore,
// as /api/generate and /api/chat do: verbose true (rbee writes the long
// arrays, the vocabulary among them, as null whatever is asked) and
// unknown fields, each named; model or name, and verbose false, are taken.
func TestOllamaShowFields(t *testing.T) {
	c := nodetest.New(t, 1)
	n := c.Nodes[0]
	for _, tc := range []struct {
		body     string
		status   int
		contains string
	}{
		{`{"model":"stories260k","verbose":true}`, 400, "verbose"},
		{`{"model":"stories260k","bogus":1}`, 400, `unknown field "bogus"`},
		{`{"model":"stories260k","verbose":"yes"}`, 400, "verbose must be a boolean"},
		// Taken: the lookup runs (nothing serves the model here).
		{`{"model":"stories260k","verbose":false}`, 404, "not found"},
		{`{"name":"stories260k","verbose":null}`, 404, "not found"},
	} {
		st, b := ollamaCall(t, n, "POST", "/api/show", "", tc.body)
		require.Equal(t, tc.status, st, "%s: %s", tc.body, b)
		require.Contains(t, ollamaErr(t, b), tc.contains, tc.body)
	}
}

// TestOllamaLogprobs: logprobs and top_logprobs (ollama-python's and
// Ollama's since 0.12) give each generated token's log-probability and
// alternatives in the answer's "logprobs", one entry per token, whole and
// streamed (each chunk the entries of its tokens, the rest in the final
// one), on /api/chat and /api/generate; they were refused as unknown
// fields. A bad value is the worker's 400, and without them no chunk
// has any.
func TestOllamaLogprobs(t *testing.T) {
	_, n := storiesNode(t)

	type entry struct {
		Token       string  `json:"token"`
		Logprob     float64 `json:"logprob"`
		TopLogprobs []struct {
			Token   string  `json:"token"`
			Logprob float64 `json:"logprob"`
		} `json:"top_logprobs"`
	}
	const opts = `"options":{"num_predict":6,"temperature":0},"logprobs":true,"top_logprobs":2`
	for _, tc := range []struct{ path, body string }{
		{"/api/chat", `{"model":"stories260k","messages":[{"role":"user","content":"Once upon a time"}],` + opts},
		{"/api/generate", `{"model":"stories260k","prompt":"Once upon a time",` + opts},
	} {
		for _, stream := range []bool{false, true} {
			body := strings.TrimSuffix(tc.body, "}") + `,"stream":` + strconv.FormatBool(stream) + `}`
			st, b := ollamaCall(t, n, "POST", tc.path, "", body)
			require.Equal(t, http.StatusOK, st, "%s", b)
			lines := ndjson(t, b)
			var entries []entry
			var text, tokens strings.Builder
			for _, l := range lines {
				if m, ok := l["message"].(map[string]any); ok {
					text.WriteString(m["content"].(string))
				} else {
					text.WriteString(l["response"].(string))
				}
				raw, _ := json.Marshal(l["logprobs"])
				var es []entry
				require.NoError(t, json.Unmarshal(raw, &es))
				entries = append(entries, es...)
			}
			last := lines[len(lines)-1]
			require.Equal(t, true, last["done"])
			require.Len(t, entries, int(last["eval_count"].(float64)), "%s stream %t: %s", tc.path, stream, b)
			for _, e := range entries {
				require.LessOrEqual(t, e.Logprob, 0.0)
				require.Len(t, e.TopLogprobs, 2)
				tokens.WriteString(e.Token)
			}
			require.Equal(t, text.String(), tokens.String(), "the entries' tokens are the answer")
		}
	}

	st, b := ollamaCall(t, n, "POST", "/api/chat", "", `{"model":"stories260k","messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":21}`)
	require.Equal(t, http.StatusBadRequest, st, "%s", b)
	require.Contains(t, ollamaErr(t, b), "top_logprobs")
	st, b = ollamaCall(t, n, "POST", "/api/generate", "", `{"model":"stories260k","prompt":"x","logprobs":"yes"}`)
	require.Equal(t, http.StatusBadRequest, st, "%s", b)
	require.Contains(t, ollamaErr(t, b), "logprobs must be a boolean")
	st, b = ollamaCall(t, n, "POST", "/api/generate", "", `{"model":"stories260k","prompt":"x","options":{"num_predict":3}}`)
	require.Equal(t, http.StatusOK, st, "%s", b)
	require.NotContains(t, string(b), "logprobs")
}

// storiesNode is a one-node cluster serving stories260k from one worker
// process, ready to schedule (the test is skipped with -short).
func storiesNode(t *testing.T) (*nodetest.Cluster, *node.Node) {
	t.Helper()
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c := servingCluster(t, 1)
	n := c.Nodes[0]
	spawn(t, n, n.Name(), 1)
	waitSchedulable(t, c, 1)
	return c, n
}

// TestOllamaShowServedContext: /api/show's num_ctx is the context the
// serving workers hold (a worker spawned with ctx 512 on a model trained
// for 2048), which Continue adopts and sends back as options.num_ctx with
// every request: it said the trained 2048, so every such request asked for
// more than the workers hold and was refused. model_info keeps the
// trained length, as the GGUF says.
func TestOllamaShowServedContext(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c := servingCluster(t, 1)
	n := c.Nodes[0]
	var res api.SpawnResult
	run(t, n, map[string]any{"operation": "worker_spawn", "hive": n.Name(), "model": "builtin:stories260k", "threads": 1, "slots": 1, "ctx": 512}, &res)
	waitSchedulable(t, c, 1)

	var show ollamaShow
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		st, b := ollamaCall(t, n, "POST", "/api/show", "", `{"name":"stories260k"}`)
		require.Equal(t, http.StatusOK, st, "%s", b)
		require.NoError(t, json.Unmarshal(b, &show))
		assert.True(ct, strings.HasPrefix(show.Parameters, "num_ctx 512\n"), "parameters: %q", show.Parameters)
	}, nodetest.WaitTimeout, 50*time.Millisecond)
	require.EqualValues(t, 2048, show.ModelInfo["llama.context_length"])
	// /api/ps says the same, as Ollama's context_length of a loaded model.
	st, b := ollamaCall(t, n, "GET", "/api/ps", "", "")
	require.Equal(t, http.StatusOK, st, "%s", b)
	var ps struct {
		Models []struct {
			ContextLength int `json:"context_length"`
		} `json:"models"`
	}
	require.NoError(t, json.Unmarshal(b, &ps))
	require.Len(t, ps.Models, 1)
	require.Equal(t, 512, ps.Models[0].ContextLength)

	// Continue's request with the num_ctx it read.
	st, b = ollamaCall(t, n, "POST", "/api/chat", "", `{"model":"stories260k","stream":false,"messages":[{"role":"user","content":"Once"}],`+
		`"options":{"num_ctx":512,"num_predict":3},"keep_alive":1800}`)
	require.Equal(t, http.StatusOK, st, "%s", b)
}
