package relay

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/rbee-project/rbee/internal/sse"
	"github.com/rbee-project/rbee/node/jobs"
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
// an end event came; otherwise it fails as a request refused, the
// client gone or the worker's failure (*Retryable). The ids it records
// are non-negative, at most one per token event passed on.
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
		if err == nil && !strings.Contains(string(data), "end") {
			t.Fatalf("success without an end event: %q", data)
		}
		if err != nil {
			var rt *Retryable
			var je *jobs.Error
			if !errors.As(err, &rt) && !errors.As(err, &je) && !errors.Is(err, ErrClientGone) {
				t.Fatalf("error of no known kind: %v", err)
			}
		}
		for _, id := range st.IDs {
			if id < 0 {
				t.Fatalf("a negative id recorded: %v", st.IDs)
			}
		}
		if len(st.IDs) > len(tokens) {
			t.Fatalf("%d ids recorded for %d token events", len(st.IDs), len(tokens))
		}
		if len(tokens) > 0 && !st.Delivered {
			t.Fatal("tokens passed on but not marked delivered")
		}
	})
}

// FuzzOpenAIStream: the relay of a worker's OpenAI stream never panics;
// it succeeds only after [DONE], passes on exactly the data events it
// read (never a token-id event), and records only non-negative ids, at
// most one per chunk passed on.
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
		if err != nil {
			var rt *Retryable
			var je *jobs.Error
			if !errors.As(err, &rt) && !errors.As(err, &je) && !errors.Is(err, ErrClientGone) {
				t.Fatalf("error of no known kind: %v", err)
			}
		}
		if strings.Contains(out.String(), worker.TokenIDEvent) {
			t.Fatalf("a token-id event reached the client: %q", out.String())
		}
		for _, id := range st.IDs {
			if id < 0 {
				t.Fatalf("a negative id recorded: %v", st.IDs)
			}
		}
		if len(st.IDs) > chunks {
			t.Fatalf("%d ids recorded for %d chunks passed on", len(st.IDs), chunks)
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
