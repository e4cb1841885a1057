package relay

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/rbee-project/rbee/internal/sse"
	"github.com/rbee-project/rbee/node/router"
	"github.com/rbee-project/rbee/worker"
)

// streamSeeds are worker streams of both kinds, whole and broken.
var streamSeeds = []string{
	"event: started\ndata: {\"resumed\":0}\n\nevent: token\ndata: {\"id\":7,\"text\":\"Once\"}\n\nevent: end\ndata: {\"stop_reason\":\"length\"}\n\n",
	"event: token\ndata: {\"id\":-1,\"text\":\"x\"}\n\nevent: error\ndata: {\"code\":\"invalid_request\",\"message\":\"no\"}\n\n",
	"event: started\ndata: {\"resumed\":3}\n\n",
	"event: rbee_token\ndata: {\"id\":7}\n\ndata: {\"id\":\"c1\",\"choices\":[{\"text\":\"Once\"}]}\n\ndata: [DONE]\n\n",
	"event: rbee_token\ndata: {\"id\":-2}\n\n",
	"data: {\"error\":{\"message\":\"boom\",\"code\":500}}\n\n",
	"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0}]}}]}\n\ndata: [DONE]\n\n",
	"data: not json\n\n",
	"event: token\ndata: {\"id\":1}\n",
	"",
}

// FuzzInfer: the relay of a worker's /v1/infer stream never panics on
// what a worker (or anything at its port) sends. It succeeds only when
// an end event came. The ids it records are non-negative, at most one per
// token event passed on.
func FuzzInfer(f *testing.F) {
	for _, s := range streamSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var st State
		var tokens []worker.TokenEvent
		resp := &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(bytes.NewReader(data))}
		_, err := Infer(resp, router.Target{}, &st, func(te worker.TokenEvent) error {
			tokens = append(tokens, te)
			return nil
		})
		if err == nil && countEvents(data, "end") == 0 {
			t.Fatalf("success without an end event: %q", data)
		}
		for _, id := range st.IDs {
			if id < 0 {
				t.Fatalf("a negative id recorded: %v", st.IDs)
			}
		}
		if len(st.IDs) > len(tokens) {
			t.Fatalf("%d ids recorded for %d token events passed on", len(st.IDs), len(tokens))
		}
		if n := countEvents(data, "token"); len(st.IDs) > n || len(tokens) > n {
			t.Fatalf("%d ids and %d tokens passed on for %d token events", len(st.IDs), len(tokens), n)
		}
		if len(tokens) > 0 && !st.Delivered {
			t.Fatal("tokens passed on but not marked delivered")
		}
	})
}

// FuzzOpenAIStream: the relay of a worker's OpenAI stream never panics;
// it succeeds only after [DONE], passes on only data events (never a
// token-id event: what the client gets parses back into events without a
// type), and records only non-negative ids, at most one per token-id
// event.
func FuzzOpenAIStream(f *testing.F) {
	for _, s := range streamSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		var st State
		chunks := 0
		resp := &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(bytes.NewReader(data))}
		err := OpenAIStream(sse.NewWriter(&out), resp, router.Target{}, &st, func() { chunks++ })
		if err == nil && !strings.Contains(string(data), "[DONE]") {
			t.Fatalf("success without [DONE]: %q", data)
		}
		for _, id := range st.IDs {
			if id < 0 {
				t.Fatalf("a negative id recorded: %v", st.IDs)
			}
		}
		if n := countEvents(data, worker.TokenIDEvent); len(st.IDs) > n {
			t.Fatalf("%d ids recorded for %d token-id events", len(st.IDs), n)
		}
		// What the client got parses back into the same data events.
		var back int
		if err := sse.Read(bytes.NewReader(out.Bytes()), MaxEvent, func(ev sse.Event) error {
			if ev.Type != "" {
				t.Fatalf("an event of type %q passed on", ev.Type)
			}
			back++
			return nil
		}); err != nil {
			t.Fatalf("the client's stream does not parse: %v", err)
		}
		if back != chunks {
			t.Fatalf("%d events passed on, %d parse back", chunks, back)
		}
	})
}

// countEvents is how many events of type typ data holds, as the SSE
// reader parses it (an upper bound on what the relay acts on).
func countEvents(data []byte, typ string) int {
	n := 0
	_ = sse.Read(bytes.NewReader(data), MaxEvent, func(ev sse.Event) error {
		if ev.Type == typ {
			n++
		}
		return nil
	})
	return n
}
