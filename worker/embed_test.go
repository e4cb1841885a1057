package worker

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEmbeddings(t *testing.T) {
	cfg := testConfig(t)
	cfg.ModelName = "stories-served"
	_, base := startServer(t, cfg)
	url := base + "/v1/embeddings"

	resp := post(t, testCtx(t), url, `{"model":"x","input":["Once upon a time","The cat sat",  "Once upon a time"],"encoding_format":"float","user":"u"}`)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var er EmbedResponse
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&er))
	require.Equal(t, "list", er.Object)
	require.Equal(t, "stories-served", er.Model, "the name it is served under, as chat and /v1/models say")
	require.Len(t, er.Data, 3)
	for i, d := range er.Data {
		require.Equal(t, i, d.Index)
		require.Equal(t, "embedding", d.Object)
		require.Len(t, d.Embedding, 64) // stories260K's hidden size
		var n float64
		for _, v := range d.Embedding {
			n += float64(v) * float64(v)
		}
		require.InDelta(t, 1, math.Sqrt(n), 1e-4)
	}
	require.Equal(t, er.Data[0].Embedding, er.Data[2].Embedding)
	require.NotEqual(t, er.Data[0].Embedding, er.Data[1].Embedding)
	require.Positive(t, er.Usage.PromptTokens)

	resp = post(t, testCtx(t), url, `{"input":"Once upon a time"}`)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var one EmbedResponse
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&one))
	require.Equal(t, er.Data[0].Embedding, one.Data[0].Embedding, "a string input is one input")

	// base64, as OpenAI's Python and Node clients ask by default: the
	// float32 bytes, little-endian.
	resp = post(t, testCtx(t), url, `{"input":"Once upon a time","encoding_format":"base64"}`)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var b64 struct {
		Data []struct {
			Embedding string `json:"embedding"`
		} `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&b64))
	raw, err := base64.StdEncoding.DecodeString(b64.Data[0].Embedding)
	require.NoError(t, err)
	require.Len(t, raw, 4*64)
	for k, want := range one.Data[0].Embedding {
		require.Equal(t, want, math.Float32frombits(binary.LittleEndian.Uint32(raw[4*k:])))
	}

	for _, tc := range []struct{ name, body, param, code string }{
		{"no input", `{"model":"x"}`, "input", "missing"},
		{"empty input", `{"input":["a",""]}`, "input[1]", "missing"},
		{"other encoding", `{"input":"a","encoding_format":"int8"}`, "encoding_format", "invalid_value"},
		{"dimensions", `{"input":"a","dimensions":8}`, "dimensions", codeUnsupportedParam},
		{"unknown", `{"input":"a","pooling":"cls"}`, "pooling", codeUnknownParam},
		{"input of a wrong type", `{"input":[1,2]}`, "input", "invalid_type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := post(t, testCtx(t), url, tc.body)
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
			var eb ErrorBody
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
			require.NotNil(t, eb.Error.Param)
			require.Equal(t, tc.param, *eb.Error.Param)
			require.Equal(t, tc.code, eb.Error.Code)
		})
	}
}

// TestEmbeddingsTruncate: truncate (rbee's, for Ollama's /api/embed) cuts
// an input longer than the context to its first context-length tokens;
// without it, or with false, such an input is refused as before. Inputs
// that fit are unchanged.
// TestEmbeddingsManyInputs: a batch of the size clients send (LangChain's
// OpenAIEmbeddings sends up to 1,000 texts a request) is served, one past
// OpenAI's limit of 2,048 is a 400 naming input.
func TestEmbeddingsManyInputs(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	url := base + "/v1/embeddings"
	inputs := func(n int) string {
		b, err := json.Marshal(map[string]any{"input": slices.Repeat([]string{"Once upon a time"}, n)})
		require.NoError(t, err)
		return string(b)
	}
	resp := post(t, testCtx(t), url, inputs(1000))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var er EmbedResponse
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&er))
	require.Len(t, er.Data, 1000)
	require.Equal(t, 999, er.Data[999].Index)

	resp = post(t, testCtx(t), url, inputs(2049))
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	var e struct {
		Error struct{ Param, Message string }
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
	require.Equal(t, "input", e.Error.Param)
	require.Contains(t, e.Error.Message, "2048")
}

func TestEmbeddingsTruncate(t *testing.T) {
	const ctxLen = 16
	cfg := testConfig(t)
	cfg.ContextSize = ctxLen
	_, base := startServer(t, cfg)
	url := base + "/v1/embeddings"
	long := "Once upon a time there was a little girl who liked to play in the park with her dog"
	longer := long + " and her cat, every day after school"
	embed := func(body string) (int, EmbedResponse, ErrorBody) {
		resp := post(t, testCtx(t), url, body)
		var er EmbedResponse
		var eb ErrorBody
		if resp.StatusCode == http.StatusOK {
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&er))
		} else {
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
		}
		return resp.StatusCode, er, eb
	}
	_, short, _ := embed(`{"input":"Once upon a time"}`)
	for _, tc := range []struct {
		name, body string
		status     int
	}{
		{"too long", `{"input":"` + long + `"}`, http.StatusBadRequest},
		{"too long, truncate false", `{"input":"` + long + `","truncate":false}`, http.StatusBadRequest},
		{"truncate", `{"input":["` + long + `","` + longer + `","Once upon a time"],"truncate":true}`, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, er, eb := embed(tc.body)
			require.Equal(t, tc.status, st)
			if st != http.StatusOK {
				require.Equal(t, "context_length_exceeded", eb.Error.Code)
				return
			}
			require.Len(t, er.Data, 3)
			require.Equal(t, er.Data[0].Embedding, er.Data[1].Embedding, "the same first %d tokens", ctxLen)
			require.Equal(t, short.Data[0].Embedding, er.Data[2].Embedding, "an input that fits is not cut")
			require.Equal(t, 2*ctxLen+short.Usage.PromptTokens, er.Usage.PromptTokens)
		})
	}
}
