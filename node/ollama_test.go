package node_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"

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
