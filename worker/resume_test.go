package worker

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestResumeExtension continues streams through the extension field as a
// node does after a worker died: the native and the OpenAI endpoints give
// the uninterrupted run's remainder, seeded and with a stop string.
func TestResumeExtension(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	body := map[string]any{"prompt": "Once upon a time", "max_tokens": 30, "temperature": 0.9, "seed": 11}
	full := infer(t, base, body)
	require.NotNil(t, full.End)
	ids := full.ids()
	require.Greater(t, len(ids), 10)

	t.Run("infer", func(t *testing.T) {
		for _, k := range []int{1, 7, len(ids) - 1} {
			rb := map[string]any{ExtField: Ext{V: ExtVersion, Resume: ids[:k]}}
			for f, v := range body {
				rb[f] = v
			}
			rest := infer(t, base, rb)
			require.NotNil(t, rest.End, "%+v", rest.Err)
			require.Equal(t, k, rest.Started.Resumed)
			require.Equal(t, full.Started.PromptTokens, rest.Started.PromptTokens)
			require.Equal(t, full.Tokens[k:], rest.Tokens, "resumed after %d", k)
			require.Equal(t, full.End.TokensOut, rest.End.TokensOut)
			require.Equal(t, full.End.TokensIn, rest.End.TokensIn)
		}
	})

	t.Run("openai chat stream", func(t *testing.T) {
		req := map[string]any{"messages": []Message{{Role: "user", Content: "Once upon a time"}}, "max_tokens": 20, "seed": 5, "stream": true,
			"stream_options": map[string]any{"include_usage": true}}
		read := func(ext Ext) (ids []int32, text string, chunks []ChatCompletionChunk) {
			r := map[string]any{ExtField: ext}
			for f, v := range req {
				r[f] = v
			}
			resp := post(t, testCtx(t), base+"/v1/chat/completions", r)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			for _, ev := range readAllSSE(t, resp.Body) {
				switch ev.Event {
				case TokenIDEvent:
					var ti TokenID
					require.NoError(t, json.Unmarshal([]byte(ev.Data), &ti))
					ids = append(ids, ti.ID)
				case "":
					if ev.Data == "[DONE]" {
						continue
					}
					var c ChatCompletionChunk
					require.NoError(t, json.Unmarshal([]byte(ev.Data), &c), ev.Data)
					chunks = append(chunks, c)
					if len(c.Choices) > 0 {
						text += c.Choices[0].Delta.Content
					}
				default:
					t.Fatalf("unexpected event %q", ev.Event)
				}
			}
			return ids, text, chunks
		}
		fullIDs, fullText, fullChunks := read(Ext{V: ExtVersion, TokenIDs: true})
		require.Len(t, fullIDs, 20)
		require.Equal(t, "assistant", fullChunks[0].Choices[0].Delta.Role)
		first := fullChunks[0]
		k := 9
		restIDs, restText, restChunks := read(Ext{V: ExtVersion, TokenIDs: true, Resume: fullIDs[:k], ID: first.ID, Created: first.Created})
		require.Equal(t, fullIDs[k:], restIDs)
		require.True(t, strings.HasSuffix(fullText, restText), "%q does not end with %q", fullText, restText)
		for _, c := range restChunks {
			require.Equal(t, first.ID, c.ID)
			require.Equal(t, first.Created, c.Created)
			if len(c.Choices) > 0 {
				require.Empty(t, c.Choices[0].Delta.Role, "a resumed chat stream has no role chunk")
			}
		}
		last := restChunks[len(restChunks)-1]
		require.NotNil(t, last.Usage)
		full := *fullChunks[len(fullChunks)-1].Usage
		// The resumed request finds its prompt in the slot's cache (the
		// first request put it there); the counts are the whole
		// completion's.
		require.Positive(t, last.Usage.PromptTokensDetails.CachedTokens)
		full.PromptTokensDetails = last.Usage.PromptTokensDetails
		require.Equal(t, full, *last.Usage, "usage counts the whole completion")
	})

	t.Run("completion stream with logprobs", func(t *testing.T) {
		// A resumed legacy completion goes on counting text_offset from
		// the text the client has, and its tokens per second count only
		// what this attempt generated.
		req := map[string]any{"prompt": "Once upon a time", "max_tokens": 16, "seed": 3, "temperature": 0, "logprobs": 1, "stream": true}
		read := func(ext Ext) (ids []int32, text string, offsets []int) {
			r := map[string]any{ExtField: ext}
			for f, v := range req {
				r[f] = v
			}
			resp := post(t, testCtx(t), base+"/v1/completions", r)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			for _, ev := range readAllSSE(t, resp.Body) {
				switch {
				case ev.Event == TokenIDEvent:
					var ti TokenID
					require.NoError(t, json.Unmarshal([]byte(ev.Data), &ti))
					ids = append(ids, ti.ID)
				case ev.Event == "" && ev.Data != "[DONE]":
					var c TextCompletion
					require.NoError(t, json.Unmarshal([]byte(ev.Data), &c), ev.Data)
					if len(c.Choices) > 0 {
						text += c.Choices[0].Text
						if lp := c.Choices[0].Logprobs; lp != nil {
							offsets = append(offsets, lp.TextOffset...)
						}
					}
				}
			}
			return ids, text, offsets
		}
		fullIDs, fullText, fullOffsets := read(Ext{V: ExtVersion, TokenIDs: true})
		require.Len(t, fullOffsets, len(fullIDs))
		k := 6
		prefix := fullText[:fullOffsets[k]]
		restIDs, restText, restOffsets := read(Ext{V: ExtVersion, TokenIDs: true, Resume: fullIDs[:k], TextOffset: len(prefix)})
		require.Equal(t, fullIDs[k:], restIDs)
		require.Equal(t, fullText, prefix+restText)
		require.Equal(t, fullOffsets[k:], restOffsets, "text_offset goes on from the client's text")

		rb := map[string]any{ExtField: Ext{V: ExtVersion, Resume: fullIDs[:k]}}
		for f, v := range body {
			rb[f] = v
		}
		rest := infer(t, base, rb)
		require.NotNil(t, rest.End)
		require.InDelta(t, float64(rest.End.TokensOut-k)/(rest.End.GenMS/1000), rest.End.TokensPerSecond, rest.End.TokensPerSecond*0.05+1,
			"tokens per second counts the tokens this attempt generated")
	})

	t.Run("bad extension", func(t *testing.T) {
		for _, ext := range []map[string]any{
			{"v": 1, "text_offset": -1},
			{"v": 2},
			{"v": 1, "id": "bad id\n"},
			{"v": 1, "resume": []int{1, 99999}},
			{"v": 1, "resume": make([]int, 5000)},
		} {
			resp := post(t, testCtx(t), base+"/v1/completions", map[string]any{"prompt": "Hi", "max_tokens": 2, ExtField: ext})
			require.GreaterOrEqual(t, resp.StatusCode, 400, "%v", ext)
			require.Less(t, resp.StatusCode, 500, "%v", ext)
		}
	})
}
