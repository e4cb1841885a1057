package relay

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/sse"
	"github.com/rbee-project/rbee/node/router"
)

// TestOpenAIStreamState: what the relay records of a worker's
// stream decides whether another worker may go on with it. A chunk whose
// text, tool call or logprobs reached the client without a token id makes
// the stream unresumable (another worker would send some of it twice;
// reasoning_content is text too);
// text_offset bytes are counted.
func TestOpenAIStreamState(t *testing.T) {
	cases := []struct {
		name        string
		stream      string
		unresumable bool
		ids         []int32
		textLen     int
	}{
		{"ids before each token", "event: rbee_token\ndata: {\"id\":7}\n\n" +
			"data: {\"id\":\"c1\",\"choices\":[{\"text\":\"Once\"}]}\n\n" +
			"event: rbee_token\ndata: {\"id\":8}\n\n" +
			"data: {\"id\":\"c1\",\"choices\":[{\"text\":\" upon\"}]}\n\n", false, []int32{7, 8}, 9},
		{"a tool stream's logprobs", "data: {\"id\":\"c2\",\"choices\":[{\"delta\":{\"content\":\"\"},\"logprobs\":{\"content\":[{\"token\":\"<\",\"logprob\":-0.1}]}}]}\n\n",
			true, nil, 0},
		{"a tool call", "data: {\"id\":\"c3\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"f\"}}]}}]}\n\n", true, nil, 0},
		{"a reasoning model's reasoning", "data: {\"id\":\"c6\",\"choices\":[{\"delta\":{\"reasoning_content\":\"Hmm\"}}]}\n\n", true, nil, 0},
		{"an engine's text", "data: {\"id\":\"c4\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n", true, nil, 0},
		{"only the role chunk", "data: {\"id\":\"c5\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null}]}\n\n", false, nil, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			var st State
			resp := &http.Response{Body: io.NopCloser(strings.NewReader(tc.stream))} // it breaks before [DONE]
			err := OpenAIStream(sse.NewWriter(&out), resp, router.Target{}, &st, func() {})
			var rt *Retryable
			require.True(t, errors.As(err, &rt), "a stream without [DONE] is the worker's failure: %v", err)
			require.True(t, st.Delivered)
			require.Equal(t, tc.unresumable, st.Unresumable)
			require.Equal(t, tc.ids, st.IDs)
			require.Equal(t, tc.textLen, st.TextLen)
		})
	}
}

// An engine's chunk with invalid UTF-8 in its text reaches the client as
// valid UTF-8 JSON (U+FFFD for the bad bytes), as JSON must be.
func TestOpenAIStreamValidUTF8(t *testing.T) {
	for _, tc := range []struct{ name, chunk, want string }{
		{"valid", "{\"choices\":[{\"text\":\"h\u00e9\"}]}", "{\"choices\":[{\"text\":\"h\u00e9\"}]}"},
		{"invalid bytes", "{\"choices\":[{\"text\":\"\xff\xfe bad\"}]}", "{\"choices\":[{\"text\":\"\ufffd bad\"}]}"},
		{"a cut character", "{\"choices\":[{\"text\":\"a\xc3\"}]}", "{\"choices\":[{\"text\":\"a\ufffd\"}]}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			var st State
			resp := &http.Response{Body: io.NopCloser(strings.NewReader("data: " + tc.chunk + "\n\ndata: [DONE]\n\n"))}
			require.NoError(t, OpenAIStream(sse.NewWriter(&out), resp, router.Target{}, &st, func() {}))
			require.True(t, utf8.Valid(out.Bytes()), "%q", out.String())
			require.Contains(t, out.String(), "data: "+tc.want+"\n")
		})
	}
}
