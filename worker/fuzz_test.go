package worker

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

var (
	fuzzModelOnce sync.Once
	fuzzModel     Model
	fuzzModelErr  error
)

// FuzzPrepare feeds arbitrary bodies through the request parser and
// validator of every endpoint, on the real model. Invariants: no panic; a
// rejected body gets a 4xx with a message; an accepted one yields a request
// the engine can run within the context.
func FuzzPrepare(f *testing.F) {
	for _, seed := range []string{
		`{"prompt":"Once upon a time","max_tokens":16,"temperature":0}`,
		`{"messages":[{"role":"user","content":"hi"}],"stream":true,"stop":["\n","."]}`,
		`{"prompt":["a"],"top_k":40,"top_p":0.9,"min_p":0.05,"repeat_penalty":1.1,"seed":-1}`,
		`{"prompt":"x","max_tokens":99999}`,
		`{"prompt":5}`,
		`[]`,
		`{"prompt":"<s></s>","stop":"x","n":1,"max_completion_tokens":3}`,
		`{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object","properties":{"a":{"enum":[1,"b"]}}}}},"logprobs":true,"top_logprobs":2}`,
		`{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"1"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":"required"}`,
		`{"prompt":"x","logprobs":5,"response_format":{"type":"json_object"}}`,
	} {
		for mode := range 3 {
			f.Add([]byte(seed), uint8(mode))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte, mode uint8) {
		fuzzModelOnce.Do(func() {
			fuzzModel, fuzzModelErr = testLoad(testModelPath, LoadOptions{Threads: 1, ContextSize: 256})
		})
		if fuzzModelErr != nil {
			t.Fatal(fuzzModelErr)
		}
		m := fuzzModel
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		var g genRequest
		if aerr := decodeBody(w, r, &g, endpoint(mode%3)); aerr != nil {
			checkRejected(t, aerr)
			return
		}
		gr, aerr := prepare(t.Context(), m, &g, endpoint(mode%3))
		if aerr != nil {
			checkRejected(t, aerr)
			return
		}
		ctxLen := m.Info().ContextLength
		if len(gr.Prompt) == 0 || len(gr.Prompt) >= ctxLen {
			t.Fatalf("accepted prompt of %d tokens (context %d)", len(gr.Prompt), ctxLen)
		}
		if gr.MaxTokens < 1 || len(gr.Prompt)+gr.MaxTokens > ctxLen {
			t.Fatalf("accepted max_tokens %d with %d prompt tokens (context %d)", gr.MaxTokens, len(gr.Prompt), ctxLen)
		}
		for _, s := range gr.Stop {
			if s == "" {
				t.Fatal("accepted an empty stop string")
			}
		}
		sp := gr.Sample
		if sp.Temperature < 0 || sp.TopK < 0 || sp.TopP < 0 || sp.TopP > 1 || sp.MinP < 0 || sp.MinP > 1 || sp.RepeatPenalty < 0 || sp.RepeatLastN < -1 {
			t.Fatalf("accepted sampling %+v", sp)
		}
	})
}

func checkRejected(t *testing.T, e *apiError) {
	t.Helper()
	if e.status != http.StatusBadRequest && e.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d for a bad body", e.status)
	}
	if e.msg == "" || e.code == "" || e.typ != errTypeInvalid {
		t.Fatalf("incomplete error %+v", e)
	}
}
